package consent

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPutsRecordTheActor: PUT /v1/cases, /v1/agreements and /v1/customers name the
// authenticated admin (admin.Actor) in the stored row (updated_by), the answer and a log
// line. Before, nothing did: an admin could assign themselves to a case (need-to-know
// access) or extend a retention deadline without a trace.
func TestPutsRecordTheActor(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			var buf bytes.Buffer
			var mu sync.Mutex
			cfg := testConfig(t, backend)
			s := openStore(t, cfg, Options{Logger: slog.New(slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &mu}, nil))})
			cl := serveAdmin(t, s)
			const actor = "admin-token" // admin.Actor for the static token
			var cs Case
			if err := cl.Do("PUT", "/cases/K-1", map[string]any{"customer_id": "C-1", "assignees": []string{"mallory"}}, &cs); err != nil {
				t.Fatal(err)
			}
			until := time.Now().Add(365 * 24 * time.Hour).UTC()
			var ag Agreement
			if err := cl.Do("PUT", "/agreements/P-1", map[string]any{"purposes": []string{"marketing.communications.email"}, "categories": []string{"user.contact.email"}, "valid_until": until}, &ag); err != nil {
				t.Fatal(err)
			}
			var cu Customer
			if err := cl.Do("PUT", "/customers/C-1", map[string]any{"retention_until": until}, &cu); err != nil {
				t.Fatal(err)
			}
			if cs.UpdatedBy != actor || ag.UpdatedBy != actor || cu.UpdatedBy != actor {
				t.Fatalf("answers: case %q agreement %q customer %q", cs.UpdatedBy, ag.UpdatedBy, cu.UpdatedBy)
			}
			// In the database, also after a restart (the view is loaded from it).
			s.Close()
			s = openStore(t, cfg, Options{})
			c, _, err := s.be.Case(ctx, "K-1")
			a, _, err2 := s.be.Agreement(ctx, "P-1")
			v, err3 := s.Customer(ctx, "C-1")
			if err != nil || err2 != nil || err3 != nil || c.UpdatedBy != actor || a.UpdatedBy != actor || v.Customer.UpdatedBy != actor {
				t.Fatalf("stored: case %+v agreement %+v customer %+v (%v %v %v)", c, a, v.Customer, err, err2, err3)
			}
			mu.Lock()
			logs := buf.String()
			mu.Unlock()
			for _, msg := range []string{`"msg":"case updated"`, `"msg":"agreement updated"`, `"msg":"customer updated"`} {
				found := false
				for _, line := range strings.Split(logs, "\n") {
					if strings.Contains(line, msg) && strings.Contains(line, `"actor":"`+actor+`"`) {
						found = true
					}
				}
				if !found {
					t.Errorf("no log line %s naming the actor:\n%s", msg, logs)
				}
			}
			if !strings.Contains(logs, `"assignees":["mallory"]`) {
				t.Errorf("case log line does not name the assignees:\n%s", logs)
			}
		})
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
