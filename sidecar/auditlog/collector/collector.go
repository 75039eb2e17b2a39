// Package collector is a minimal OPA decision-log service: it accepts POSTs of gzip-compressed
// JSON arrays of events, deduplicates them by decision_id and stores them as JSON lines. It is
// the real process the upload sink is tested against (e2e/cmd/logcollector) and a reference for
// what consentry's upload expects from a collector.
package collector

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
)

// Server stores uploaded events.
type Server struct {
	mu        sync.Mutex
	out       *os.File
	seen      map[string]bool
	requests  int
	dups      int
	failFirst int
}

// Stats is what GET /stats returns.
type Stats struct {
	Events     int `json:"events"`
	Duplicates int `json:"duplicates"`
	Requests   int `json:"requests"`
}

// New opens (or reloads) the store at path. failFirst makes the first n POSTs fail with 503,
// to exercise the client's retries.
func New(path string, failFirst int) (*Server, error) {
	s := &Server{seen: map[string]bool{}, failFirst: failFirst}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var ev struct {
				ID string `json:"decision_id"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				s.seen[ev.ID] = true
			}
		}
		f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	s.out = out
	return s, nil
}

// ServeHTTP implements the decision-log API (POST any path) plus GET /stats.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/stats" {
		s.mu.Lock()
		st := Stats{Events: len(s.seen), Duplicates: s.dups, Requests: s.requests}
		s.mu.Unlock()
		_ = json.NewEncoder(w).Encode(st)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	s.requests++
	fail := s.requests <= s.failFirst
	s.mu.Unlock()
	if fail {
		http.Error(w, "injected failure", http.StatusServiceUnavailable)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	var events []json.RawMessage
	if err := json.NewDecoder(body).Decode(&events); err != nil {
		http.Error(w, "body is not a JSON array: "+err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []byte
	for _, ev := range events {
		var id struct {
			ID string `json:"decision_id"`
		}
		if err := json.Unmarshal(ev, &id); err != nil || id.ID == "" {
			http.Error(w, "event without decision_id", http.StatusBadRequest)
			return
		}
		if s.seen[id.ID] {
			s.dups++
			continue
		}
		s.seen[id.ID] = true
		buf = append(append(buf, ev...), '\n')
	}
	if _, err := s.out.Write(buf); err == nil {
		err = s.out.Sync()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// Main runs the collector: -listen, -out, -fail-first, -addr-file (written once listening).
func Main(args []string) error {
	fs := flag.NewFlagSet("logcollector", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	out := fs.String("out", "events.jsonl", "JSON-lines store")
	failFirst := fs.Int("fail-first", 0, "answer 503 to the first N POSTs")
	addrFile := fs.String("addr-file", "", "write the bound address here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := New(*out, *failFirst)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			return err
		}
	}
	fmt.Fprintln(os.Stderr, "logcollector listening on", ln.Addr())
	return http.Serve(ln, s)
}
