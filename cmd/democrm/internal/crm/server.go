package crm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 1 << 20

// Page size bounds of list endpoints.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// Server is the CRM's HTTP API.
type Server struct {
	store *Store
	log   *slog.Logger
	mux   *http.ServeMux
}

var _ http.Handler = (*Server)(nil)

// NewServer builds the API over store. A nil logger discards.
func NewServer(store *Store, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{store: store, log: log, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", s.health)
	s.mux.HandleFunc("GET /api/customers", s.listCustomers)
	s.mux.HandleFunc("POST /api/customers", s.createCustomer)
	s.mux.HandleFunc("GET /api/customers/{id}", s.getCustomer)
	s.mux.HandleFunc("PATCH /api/customers/{id}", s.patchCustomer)
	s.mux.HandleFunc("DELETE /api/customers/{id}", s.deleteCustomer)
	s.mux.HandleFunc("GET /api/customers/{id}/notes", s.listNotes)
	s.mux.HandleFunc("POST /api/customers/{id}/notes", s.addNote)
	s.mux.HandleFunc("GET /api/cases", s.listCases)
	s.mux.HandleFunc("GET /api/cases/{id}", s.getCase)
	s.mux.HandleFunc("GET /api/export", s.export)
	// Everything else, including a known path with another method, is a JSON 404.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// fail maps a store error to a response; unexpected errors are logged, not shown.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// readBody reads a bounded request body; it writes the error response itself.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", MaxBodyBytes))
		return nil, false
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return nil, false
	}
	return body, true
}

// decodeStrict decodes exactly one JSON value into v, rejecting unknown fields.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	if dec.More() {
		return errors.New("invalid JSON body: trailing data")
	}
	return nil
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if err := s.store.Ping(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "database unavailable")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// paging parses page and page_size; page_size above the maximum is clamped.
func paging(r *http.Request) (page, size int, err error) {
	page, size = 1, DefaultPageSize
	if v := r.URL.Query().Get("page"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 1 {
			return 0, 0, fmt.Errorf("page must be a positive integer, got %q", v)
		}
	}
	if v := r.URL.Query().Get("page_size"); v != "" {
		if size, err = strconv.Atoi(v); err != nil || size < 1 {
			return 0, 0, fmt.Errorf("page_size must be a positive integer, got %q", v)
		}
	}
	return page, min(size, MaxPageSize), nil
}

func (s *Server) listCustomers(w http.ResponseWriter, r *http.Request) {
	page, size, err := paging(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	f := CustomerFilter{Query: r.URL.Query().Get("q"), Segment: r.URL.Query().Get("segment"), Page: page, PageSize: size}
	items, total, err := s.store.ListCustomers(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Page[Customer]{Items: items, Page: page, PageSize: size, Total: total})
}

func (s *Server) getCustomer(w http.ResponseWriter, r *http.Request) {
	c, err := s.store.GetCustomer(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) createCustomer(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var c Customer
	if err := decodeStrict(body, &c); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if c.ID != "" && !ValidID(c.ID) {
		writeError(w, http.StatusBadRequest, "id must match [a-z0-9][a-z0-9_-]{0,62}")
		return
	}
	if strings.TrimSpace(c.Name) == "" {
		writeError(w, http.StatusBadRequest, "name is required")
		return
	}
	if err := s.store.CreateCustomer(r.Context(), &c); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/customers/"+c.ID)
	writeJSON(w, http.StatusCreated, c)
}

// badRequest marks an error that the client caused inside an update callback.
type badRequest struct{ error }

func (s *Server) patchCustomer(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var patch map[string]any
	if err := json.Unmarshal(body, &patch); err != nil || patch == nil {
		writeError(w, http.StatusBadRequest, "body must be a JSON object (merge patch)")
		return
	}
	id := r.PathValue("id")
	c, err := s.store.UpdateCustomer(r.Context(), id, func(c *Customer) error {
		updated, err := applyMergePatch(*c, patch)
		if err != nil {
			return badRequest{err}
		}
		*c = updated
		return nil
	})
	var br badRequest
	if errors.As(err, &br) {
		writeError(w, http.StatusBadRequest, br.Error())
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// applyMergePatch applies an RFC 7386 JSON merge patch to c: present members replace,
// null members clear, nested objects merge. id and timestamps are read-only.
func applyMergePatch(c Customer, patch map[string]any) (Customer, error) {
	if v, ok := patch["id"]; ok && v != c.ID {
		return c, errors.New("id is read-only")
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if _, ok := patch[k]; ok {
			return c, fmt.Errorf("%s is read-only", k)
		}
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return c, err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return c, err
	}
	merged, err := json.Marshal(mergePatch(doc, patch))
	if err != nil {
		return c, err
	}
	var out Customer
	if err := decodeStrict(merged, &out); err != nil {
		return c, err
	}
	if strings.TrimSpace(out.Name) == "" {
		return c, errors.New("name is required")
	}
	return out, nil
}

func mergePatch(target any, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}

func (s *Server) deleteCustomer(w http.ResponseWriter, r *http.Request) {
	if err := s.store.DeleteCustomer(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listNotes(w http.ResponseWriter, r *http.Request) {
	notes, err := s.store.ListNotes(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, List[Note]{Items: notes, Total: len(notes)})
}

func (s *Server) addNote(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	var in struct {
		Body   string `json:"body"`
		Author string `json:"author"`
	}
	if err := decodeStrict(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if strings.TrimSpace(in.Body) == "" {
		writeError(w, http.StatusBadRequest, "body is required")
		return
	}
	// The author is whoever the fronting proxy says the user is, unless the body names one.
	n := Note{CustomerID: r.PathValue("id"), Body: in.Body, Author: in.Author}
	if n.Author == "" {
		n.Author = r.Header.Get("X-Remote-User")
	}
	if n.Author == "" {
		n.Author = "unknown"
	}
	if err := s.store.AddNote(r.Context(), &n); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, n)
}

func (s *Server) getCase(w http.ResponseWriter, r *http.Request) {
	c, err := s.store.GetCase(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) listCases(w http.ResponseWriter, r *http.Request) {
	cases, err := s.store.ListCases(r.Context(), r.URL.Query().Get("customer_id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, List[Case]{Items: cases, Total: len(cases)})
}

// export streams every customer: one JSON object per line by default, or, for a client that
// accepts application/json but not NDJSON, one document {"items":[...],"total":N} (the shape
// of the list endpoints, for proxies that filter a record array).
func (s *Server) export(w http.ResponseWriter, r *http.Request) {
	accept := r.Header.Get("Accept")
	asDocument := strings.Contains(accept, "application/json") && !strings.Contains(accept, "application/x-ndjson")
	if asDocument {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":[`)
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	flusher, _ := w.(http.Flusher)
	n := 0
	err := s.store.ExportCustomers(r.Context(), func(c Customer) error {
		b, err := json.Marshal(c)
		if err != nil {
			return err
		}
		switch {
		case !asDocument:
			b = append(b, '\n')
		case n > 0:
			b = append([]byte{','}, b...)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		if n++; n%200 == 0 && flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	if err != nil {
		// Headers are gone; abort the connection so the client sees a truncated stream
		// rather than a complete-looking export.
		s.log.Error("export failed", "err", err, "written", n)
		panic(http.ErrAbortHandler)
	}
	if asDocument {
		fmt.Fprintf(w, `],"total":%d}`+"\n", n)
	}
}
