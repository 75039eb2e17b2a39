package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"

	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/routes"
)

// maxBodyDepth bounds JSON nesting when listing a write body's fields.
const maxBodyDepth = 16

// requestFields returns the catalogue fields the request touches. Reads touch every field the
// route returns. Writes touch the fields the JSON body carries (so a support agent may correct
// an email without being allowed to write card numbers); a body field the route does not list
// is passed under its own path and the policy denies it (unknown category). When the door does
// not have the whole body, every field the route accepts is assumed.
func requestFields(r *routes.Route, action string, req *Request) ([]string, error) {
	write := action == input.ActionCreate || action == input.ActionUpdate
	if !write || r.Body != routes.BodyJSON || !req.BodyComplete {
		return slices.Clone(r.Fields), nil
	}
	body := bytes.TrimSpace(req.Body)
	if len(body) == 0 {
		return []string{}, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &Error{Code: ReasonBodyInvalid, Status: http.StatusBadRequest, Message: fmt.Sprintf("request body is not JSON: %v", err)}
	}
	if dec.More() {
		return nil, &Error{Code: ReasonBodyInvalid, Status: http.StatusBadRequest, Message: "request body holds more than one JSON value"}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, &Error{Code: ReasonBodyInvalid, Status: http.StatusBadRequest, Message: "request body is not a JSON object"}
	}
	known := map[string]bool{}
	for _, f := range r.Fields {
		known[f] = true
	}
	set := map[string]bool{}
	if err := collect(obj, r.FieldPrefix, known, set, 0); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(set))
	for f := range set {
		out = append(out, f)
	}
	sort.Strings(out)
	return out, nil
}

func collect(obj map[string]any, prefix string, known, set map[string]bool, depth int) error {
	if depth > maxBodyDepth {
		return &Error{Code: ReasonBodyInvalid, Status: http.StatusBadRequest, Message: "request body is nested too deeply"}
	}
	for k, v := range obj {
		path := prefix + k
		if known[path] {
			set[path] = true
			continue
		}
		if child, ok := v.(map[string]any); ok && len(child) > 0 {
			if err := collect(child, path+".", known, set, depth+1); err != nil {
				return err
			}
			continue
		}
		set[path] = true
	}
	return nil
}
