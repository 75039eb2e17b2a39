package proxy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/proxy"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// BenchmarkProxy measures the proxy side by side with direct calls to the same upstream (the
// real demo CRM over SQLite, customers encrypted under Vault transit keys, the real policy
// library, decision log on: JSON lines to a file), in one run:
//
//	single:     one customer record (4 encrypted fields released, warm key cache)
//	list100:    a page of 100 records with mixed consent (half filtered out)
//	throughput: single-record reads from 16 concurrent clients
//
// go test -run '^$' -bench Proxy -benchtime 2000x ./sidecar/proxy/
func BenchmarkProxy(b *testing.B) {
	// The collector policy `consentry run` applies (engine.gc_percent / gc_headroom_mib).
	_, restoreGC := engine.Config{}.ApplyGCScoped()
	defer restoreGC()
	e := tt.Start(b, tt.Options{ListCustomers: 100})
	url := startProxy(b, proxy.Config{Upstream: e.CRM}, e.Pipeline, e.Transformer)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	agent, mkt := e.Agent(), e.Marketer()
	get := func(b *testing.B, base, path, tok, purpose, caseID string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Purpose", purpose)
		if caseID != "" {
			req.Header.Set("X-Case-Id", caseID)
		}
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("%s: %d", path, res.StatusCode)
		}
		return int(n)
	}
	type scenario struct {
		name, path, tok, purpose, caseID string
	}
	for _, sc := range []scenario{
		{"single", "/api/customers/c-1001", agent, tt.Support, "case-7"},
		{"list100", "/api/customers?page_size=100&segment=list", mkt, tt.Marketing, ""},
	} {
		for _, target := range []struct{ name, base string }{{"direct", e.CRM}, {"proxy", url}} {
			b.Run(sc.name+"/"+target.name, func(b *testing.B) {
				size := 0
				for i := 0; i < 20; i++ { // warm connections, decision cache and key cache
					size = get(b, target.base, sc.path, sc.tok, sc.purpose, sc.caseID)
				}
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t := time.Now()
					get(b, target.base, sc.path, sc.tok, sc.purpose, sc.caseID)
					lat = append(lat, time.Since(t))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
				b.ReportMetric(float64(size), "resp-bytes")
			})
		}
	}
	// The share of list100 that is the policy's response phase: one DecideRecords call (one
	// batch lookup, one evaluation of 100 records), without HTTP or the transformer.
	b.Run("list100/decide-records-only", func(b *testing.B) {
		req := &pipeline.Request{FrontDoor: "bench", Method: "GET", Target: "/api/customers?page_size=100&segment=list",
			Headers:   map[string][]string{"authorization": {"Bearer " + mkt}, "x-purpose": {tt.Marketing}},
			CanFulfil: []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}}
		out := e.Pipeline.Check(context.Background(), req)
		ids := make([]string, 100)
		for i := range ids {
			ids[i] = fmt.Sprintf("l-%03d", i)
		}
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t := time.Now()
			if _, err := e.Pipeline.DecideRecords(context.Background(), out, ids); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	})
	for _, target := range []struct{ name, base string }{{"direct", e.CRM}, {"proxy", url}} {
		b.Run("throughput/"+target.name, func(b *testing.B) {
			const clients = 16
			var wg sync.WaitGroup
			next := make(chan struct{}, b.N)
			for i := 0; i < b.N; i++ {
				next <- struct{}{}
			}
			close(next)
			b.ResetTimer()
			start := time.Now()
			for c := 0; c < clients; c++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						get(b, target.base, "/api/customers/c-1001", agent, tt.Support, "case-7")
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}
