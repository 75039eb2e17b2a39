package vaultkeys

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// benchFields is one CRM record with five encrypted fields of two classes.
var benchFields = map[string]string{
	"contact.email": "contact", "contact.phone": "contact", "address": "contact",
	"payment.card_number": "financial", "payment.card_expiry": "financial",
}

func benchSetup(b *testing.B) (*Manager, map[string]string, func() int) {
	srv := startVault(b)
	cfg := testConfig(b, srv)
	m := newManager(b, cfg, Options{})
	ctx := context.Background()
	d := allow(benchFields)
	ks, err := m.ReleaseForWrite(ctx, "bench-1", d)
	if err != nil {
		b.Fatal(err)
	}
	values := map[string]string{}
	for f, scope := range benchFields {
		values[f], _ = ks.Encrypt(scope, []byte("value of "+f+" 0123456789"))
	}
	mark := srv.AuditMark(b)
	// Transit requests only: the token's lifetime watcher renews it in the background
	// (auth/token/renew-self), which no release causes.
	vaultRequests := func() int {
		n := len(transitPaths(srv.AuditRequests(b, mark)))
		mark = srv.AuditMark(b)
		return n
	}
	return m, values, vaultRequests
}

// Warm cache: release the decision's keys and decrypt the 5 fields of one record. Target:
// p50 <= 20µs and zero Vault requests.
func BenchmarkWarmDecrypt5Fields(b *testing.B) {
	m, values, vaultRequests := benchSetup(b)
	ctx := context.Background()
	d := allow(benchFields)
	if _, err := m.Release(ctx, "bench-1", d); err != nil { // warm up
		b.Fatal(err)
	}
	vaultRequests()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		ks, err := m.Release(ctx, "bench-1", d)
		if err != nil {
			b.Fatal(err)
		}
		plain, withheld := ks.DecryptFields(d, values)
		if len(plain) != 5 || len(withheld) != 0 {
			b.Fatalf("plain %d withheld %v", len(plain), withheld)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
	if n := vaultRequests(); n != 0 {
		b.Fatalf("warm path made %d Vault requests", n)
	}
	b.ReportMetric(0, "vault-req/op")
}

// Cold cache: every iteration starts with an empty cache, so both classes' keys come from
// Vault — one concurrent round trip (one export per class), whatever the number of fields.
func BenchmarkColdRelease5Fields(b *testing.B) {
	m, values, vaultRequests := benchSetup(b)
	ctx := context.Background()
	d := allow(benchFields)
	vaultRequests()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		m.cache.purge()
		start := time.Now()
		ks, err := m.Release(ctx, "bench-1", d)
		if err != nil {
			b.Fatal(err)
		}
		if plain, _ := ks.DecryptFields(d, values); len(plain) != 5 {
			b.Fatal("not decrypted")
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
	b.ReportMetric(float64(vaultRequests())/float64(b.N), "vault-req/op")
}

// Creating keys for many customers through the write path (export miss, create, export per
// key), 8 concurrent customers, against the real Vault dev server (in-memory storage, so its RSS
// includes the stored keys). Sub-benchmarks: one class per customer, all four classes, and one
// class with transit's key cache bounded (transit/cache-config size=1000; by default transit
// caches every key it ever loaded). b.N is the number of customers.
// 10,000 customers: go test -run '^$' -bench CreateCustomerKeys -benchtime 10000x ./vaultkeys/
func BenchmarkCreateCustomerKeys(b *testing.B) {
	for _, tc := range []struct {
		name         string
		classes      []string
		transitCache int
		fileStorage  bool
	}{
		{"inmem/classes=1", []string{"contact"}, 0, false},
		{"inmem/classes=4", DefaultClasses, 0, false},
		{"file/classes=1", []string{"contact"}, 0, true},
		{"file/classes=1/transit-cache=1000", []string{"contact"}, 1000, true},
	} {
		b.Run(tc.name, func(b *testing.B) { benchCreateKeys(b, tc.classes, tc.transitCache, tc.fileStorage) })
	}
}

func benchCreateKeys(b *testing.B, classes []string, transitCache int, fileStorage bool) {
	var srv *vaulttest.Server
	if fileStorage {
		srv = vaulttest.StartPersistent(b)
		srv.WritePolicy(b, "consentry", consentryPolicy(b))
	} else {
		srv = startVault(b)
	}
	if transitCache > 0 {
		if _, err := srv.Client(b).Logical().Write("transit/cache-config", map[string]any{"size": transitCache}); err != nil {
			b.Fatal(err)
		}
	}
	cfg := testConfig(b, srv)
	cfg.Cache.MaxEntries = 1 // consentry's cache is not what is measured
	m := newManager(b, cfg, Options{})
	ctx := context.Background()
	rss0, err := srv.RSS()
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := m.KeysForMigration(ctx, fmt.Sprintf("cust-%d", i), classes); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	rss1, _ := srv.RSS()
	keys := float64(b.N * len(classes))
	if fileStorage {
		st, err := srv.StorageBytes()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(st)/keys, "storage-B/key")
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "customers/s")
	b.ReportMetric(keys/elapsed.Seconds(), "keys/s")
	b.ReportMetric(float64(rss1-rss0)/keys, "vault-rss-B/key")
	b.ReportMetric(float64(rss1)/(1<<20), "vault-rss-MiB")
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
}

// BenchmarkReplayErasures replays a ledger of 250 erased customers (1,000 keys, every one
// still absent, as after a normal start) against the real Vault dev server, one Vault call at a
// time and with the replay's bounded concurrency, side by side. ns/op is one whole replay.
//
//	go test -run '^$' -bench ReplayErasures -benchtime 5x ./vaultkeys/
func BenchmarkReplayErasures(b *testing.B) {
	srv := startVault(b)
	cfg := testConfig(b, srv)
	m := newManager(b, cfg, Options{})
	ctx := context.Background()
	const customers = 250
	for i := 0; i < customers; i++ {
		if _, err := m.Erase(ctx, fmt.Sprintf("gone-%d", i), "bench", "erasure request"); err != nil {
			b.Fatal(err)
		}
	}
	for _, conc := range []int{1, replayConcurrency} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			saved := replayConcurrency
			replayConcurrency = conc
			defer func() { replayConcurrency = saved }()
			for i := 0; i < b.N; i++ {
				rep, err := m.ReplayErasures(ctx)
				if err != nil || rep.Records != customers || rep.Absent != customers*len(DefaultClasses) {
					b.Fatalf("%+v %v", rep, err)
				}
			}
			b.ReportMetric(float64(customers*len(DefaultClasses))*float64(b.N)/b.Elapsed().Seconds(), "keys/s")
		})
	}
}
