package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"sort"
	"strings"

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
//
// A write to a JSON route must say its body is JSON: a body consentry reads as JSON but the
// CRM reads as a form (`{"name":"x&payment[card_number]=4111..."}` sent as
// application/x-www-form-urlencoded) would carry fields the decision never saw. Nor may the
// body repeat an object key: the CRM's parser may keep the occurrence this check did not.
func requestFields(r *routes.Route, action string, req *Request, headers map[string][]string) ([]string, error) {
	write := action == input.ActionCreate || action == input.ActionUpdate
	if !write || r.Body != routes.BodyJSON {
		return slices.Clone(r.Fields), nil
	}
	body := bytes.TrimSpace(req.Body)
	if err := jsonContentType(headers["content-type"], req.BodyComplete && len(body) == 0); err != nil {
		return nil, err
	}
	if !req.BodyComplete {
		return slices.Clone(r.Fields), nil
	}
	if len(body) == 0 {
		return []string{}, nil
	}
	if err := noRepeatedKeys(body); err != nil {
		return nil, err
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

// jsonContentType checks a JSON write's Content-Type: one header naming application/json or
// a +json type. It may be absent only when the request has no body.
func jsonContentType(values []string, noBody bool) error {
	switch {
	case len(values) == 0 && noBody:
		return nil
	case len(values) == 0:
		return &Error{Code: ReasonMediaType, Status: http.StatusUnsupportedMediaType, Message: "a write to this route must be sent with Content-Type: application/json"}
	case len(values) > 1:
		return &Error{Code: ReasonHeaderAmbiguous, Status: http.StatusBadRequest, Message: "more than one Content-Type header"}
	}
	mt, _, err := mime.ParseMediaType(values[0])
	if err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return &Error{Code: ReasonMediaType, Status: http.StatusUnsupportedMediaType,
		Message: fmt.Sprintf("a write to this route must be JSON (Content-Type: application/json), not %q", values[0])}
}

// noRepeatedKeys refuses a JSON body in which an object names the same key twice, at any
// depth. Go's decoder keeps the last occurrence; other parsers keep the first or merge them.
// Malformed JSON passes here: the decode that follows reports it.
func noRepeatedKeys(body []byte) error {
	type level struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var stack []level
	valueDone := func() { // a value ended: the enclosing object expects a key again
		if n := len(stack); n > 0 && stack[n-1].keys != nil {
			stack[n-1].wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF, or malformed JSON
		}
		if n := len(stack); n > 0 && stack[n-1].wantKey {
			if k, ok := tok.(string); ok {
				if stack[n-1].keys[k] {
					return &Error{Code: ReasonBodyInvalid, Status: http.StatusBadRequest, Message: fmt.Sprintf("request body repeats the key %q in one object", k)}
				}
				stack[n-1].keys[k], stack[n-1].wantKey = true, false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, level{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, level{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}
