package consent

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// TestFoldAgrees: for sequences of events, the current state each backend stores (SQLite:
// Go statements; PostgreSQL: consent_append in PL/pgSQL) equals apply() folded in Go.
func TestFoldAgrees(t *testing.T) {
	seqs := [][]string{
		{KindGranted},
		{KindWithdrawn},
		{KindGranted, KindWithdrawn},
		{KindGranted, KindWithdrawn, KindGranted},
		{KindWithdrawn, KindGranted},
		{KindGranted, KindExpired},
		{KindGranted, KindExpired, KindWithdrawn},
		{KindGranted, KindGranted},
		// An expiry (at the first grant's expiry time) changes only a grant expired by
		// then: not a renewal, not a withdrawal, not nothing.
		{KindGranted, KindGranted, KindExpired},
		{KindGranted, KindWithdrawn, KindExpired},
		{KindExpired},
		{KindExpired, KindGranted},
	}
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			base := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
			for i, kinds := range seqs {
				cust := fmt.Sprintf("fold-%d", i)
				var want *Current
				firstExpiry := base.Add(48 * time.Hour)
				for j, k := range kinds {
					exp := base.Add(time.Duration(48+j) * time.Hour)
					ev := Event{EventID: fmt.Sprintf("%s-%d", cust, j), CustomerID: cust, Purpose: "analytics.reporting", Kind: k,
						CapturedAt: base.Add(time.Duration(j) * time.Minute), CapturedBy: fmt.Sprintf("by-%d", j), RecordedAt: base, RecordedBy: "t"}
					switch k {
					case KindGranted:
						ev.NoticeVersion, ev.NoticeHash, ev.Channel, ev.ExpiresAt = fmt.Sprintf("v%d", j), "sha256:"+noticeHash, "web", &exp
					case KindWithdrawn:
						ev.Channel = "phone"
					case KindExpired:
						ev.CapturedAt = firstExpiry
					}
					res, err := s.be.Append(ctx, []Event{ev})
					if err != nil || res[0].Err != nil {
						t.Fatalf("%v: append %s: %v %v", kinds, k, err, res[0].Err)
					}
					ev.Seq = res[0].Seq
					next, changed := apply(want, ev)
					if changed {
						next.Seq = ev.Seq
						want = &next
					}
					if res[0].NoEffect == changed {
						t.Fatalf("%v after %s: NoEffect %v, apply changed %v", kinds, k, res[0].NoEffect, changed)
					}
					if got, w := res[0].Current, valueOr(want); !reflect.DeepEqual(got, w) {
						t.Fatalf("%v after %s: append returned\n%+v\nwant\n%+v", kinds, k, got, w)
					}
				}
				_, cur, _, err := s.be.Customer(ctx, cust)
				if want == nil {
					if err != nil || len(cur) != 0 {
						t.Fatalf("%v: stored %+v (%v), want no consent", kinds, cur, err)
					}
					continue
				}
				if err != nil || len(cur) != 1 || !reflect.DeepEqual(cur[0], *want) {
					t.Fatalf("%v: stored %+v (%v), want %+v", kinds, cur, err, *want)
				}
			}
		})
	}
}

func valueOr(c *Current) Current {
	if c == nil {
		return Current{}
	}
	return *c
}
