// Package collector is a minimal OPA decision-log service: it accepts POSTs of gzip-compressed
// JSON arrays of events, deduplicates them by decision_id and stores them as JSON lines. It is
// the real process the upload sink is tested against (e2e/cmd/logcollector) and a reference for
// what consentry's upload expects from a collector.
package collector

import (
	"bufio"
	"bytes"
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
	// torn is set when a failed write could not be cut back: the store may end in part of a line.
	torn bool
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
		// Lines that do not parse (torn by a failed write) are skipped.
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
		serr := sc.Err()
		// A last line without its newline (a kill mid-write): the next write starts on a
		// new line, or its first event would be glued to the torn one and lost.
		if st, err := f.Stat(); err == nil && st.Size() > 0 {
			last := make([]byte, 1)
			if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
				s.torn = true
			}
		}
		f.Close()
		if serr != nil {
			// Ids past an unreadable line would be unknown and their resends stored twice.
			return nil, fmt.Errorf("reading %s: %w", path, serr)
		}
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
	// Validate the whole batch before anything is stored or marked seen: a rejected batch
	// leaves no trace, so its resend is stored in full.
	ids := make([]string, len(events))
	for i, ev := range events {
		var id struct {
			ID string `json:"decision_id"`
		}
		if err := json.Unmarshal(ev, &id); err != nil || id.ID == "" {
			http.Error(w, fmt.Sprintf("event %d without decision_id", i), http.StatusBadRequest)
			return
		}
		ids[i] = id.ID
		var line bytes.Buffer // one event per line, whatever whitespace the client sent
		if err := json.Compact(&line, ev); err != nil {
			http.Error(w, fmt.Sprintf("event %d: %v", i, err), http.StatusBadRequest)
			return
		}
		events[i] = line.Bytes()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []byte
	var fresh []string
	batch := map[string]bool{}
	dups := 0
	for i, ev := range events {
		if s.seen[ids[i]] || batch[ids[i]] {
			dups++
			continue
		}
		batch[ids[i]] = true
		fresh = append(fresh, ids[i])
		buf = append(append(buf, ev...), '\n')
	}
	if err := s.store(buf); err != nil {
		// Nothing is marked seen: the client's resend is stored.
		http.Error(w, "store: "+err.Error(), http.StatusInternalServerError)
		return
	}
	for _, id := range fresh {
		s.seen[id] = true
	}
	s.dups += dups
	w.WriteHeader(http.StatusNoContent)
}

// store appends buf to the store and fsyncs it; the caller holds s.mu. On failure it cuts the
// store back to where it ended, so a partly written line does not stay; when that fails too,
// the next write starts on a new line, so the torn line stays apart (and New skips it).
func (s *Server) store(buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	if s.torn {
		buf = append([]byte{'\n'}, buf...)
	}
	fi, err := s.out.Stat()
	if err != nil {
		return err
	}
	end := fi.Size() // the file is opened O_APPEND and written under s.mu: buf goes here
	if _, err = s.out.Write(buf); err == nil {
		err = s.out.Sync()
	}
	if err == nil {
		s.torn = false
		return nil
	}
	if s.out.Truncate(end) != nil || s.out.Sync() != nil {
		s.torn = true
	}
	return err
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
