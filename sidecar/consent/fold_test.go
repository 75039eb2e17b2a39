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
	seqs := [][]step{
		inOrder(KindGranted),
		inOrder(KindWithdrawn),
		inOrder(KindGranted, KindWithdrawn),
		inOrder(KindGranted, KindWithdrawn, KindGranted),
		inOrder(KindWithdrawn, KindGranted),
		inOrder(KindGranted, KindExpired),
		inOrder(KindGranted, KindExpired, KindWithdrawn),
		inOrder(KindGranted, KindGranted),
		// An expiry (at the first grant's expiry time) changes only a grant expired by
		// then: not a renewal, not a withdrawal, not nothing.
		inOrder(KindGranted, KindGranted, KindExpired),
		inOrder(KindGranted, KindWithdrawn, KindExpired),
		inOrder(KindExpired),
		inOrder(KindExpired, KindGranted),
		// Stale events (captured before the latest grant or withdrawal) change nothing,
		// whatever order they arrive in; equal times keep arrival order.
		{{KindGranted, 0}, {KindWithdrawn, 10 * time.Minute}, {KindGranted, 5 * time.Minute}},
		{{KindGranted, 0}, {KindWithdrawn, 10 * time.Minute}, {KindGranted, 10 * time.Minute}},
		{{KindGranted, 10 * time.Minute}, {KindGranted, 0}},
		{{KindWithdrawn, 10 * time.Minute}, {KindWithdrawn, 0}},
		{{KindWithdrawn, 10 * time.Minute}, {KindGranted, 9 * time.Minute}},
		// A withdrawal is stale only more than withdrawalSkew before (clock skew: in doubt
		// the withdrawal applies); exactly at the margin it still applies.
		{{KindGranted, 10 * time.Minute}, {KindWithdrawn, 0}},
		{{KindGranted, 10 * time.Minute}, {KindWithdrawn, 10*time.Minute - withdrawalSkew - time.Microsecond}},
		{{KindGranted, 10 * time.Minute}, {KindWithdrawn, 10*time.Minute - withdrawalSkew}},
		{{KindGranted, 10 * time.Minute}, {KindWithdrawn, 9 * time.Minute}},
		{{KindGranted, 0}, {KindWithdrawn, 20 * time.Minute}, {KindGranted, 30 * time.Minute}, {KindWithdrawn, 25 * time.Minute}},
		// After an expiry, a grant captured after the expired grant (before its expiry) applies.
		{{KindGranted, 0}, {KindExpired, 0}, {KindGranted, time.Minute}},
		{{KindGranted, 0}, {KindExpired, 0}, {KindWithdrawn, 10 * time.Minute}, {KindGranted, 5 * time.Minute}},
	}
	// A withdrawal applied within the skew margin before the latest grant or withdrawal
	// takes effect at it: the latest change never moves back, and a delayed grant captured
	// in between stays stale. Both backends must end in the status given, not just agree.
	final := map[int]string{}
	for _, c := range []struct {
		steps  []step
		status string
	}{
		{[]step{{KindGranted, 0}, {KindWithdrawn, 20 * time.Minute}, {KindWithdrawn, 17 * time.Minute}, {KindGranted, 18 * time.Minute}}, KindWithdrawn},
		{[]step{{KindWithdrawn, 10 * time.Minute}, {KindWithdrawn, 7 * time.Minute}, {KindGranted, 8 * time.Minute}}, KindWithdrawn},
		// The margin does not creep: each withdrawal is measured against the latest change.
		{[]step{{KindWithdrawn, 10 * time.Minute}, {KindWithdrawn, 7 * time.Minute}, {KindWithdrawn, 4 * time.Minute}}, KindWithdrawn},
		{[]step{{KindGranted, 10 * time.Minute}, {KindWithdrawn, 7 * time.Minute}, {KindGranted, 8 * time.Minute}}, KindWithdrawn},
		{[]step{{KindGranted, 10 * time.Minute}, {KindWithdrawn, 7 * time.Minute}, {KindWithdrawn, 6 * time.Minute}, {KindGranted, 9 * time.Minute}}, KindWithdrawn},
		{[]step{{KindGranted, 10 * time.Minute}, {KindWithdrawn, 7 * time.Minute}, {KindGranted, 10 * time.Minute}}, KindGranted},
		{[]step{{KindGranted, 10 * time.Minute}, {KindWithdrawn, 7 * time.Minute}, {KindGranted, 11 * time.Minute}}, KindGranted},
		// After a re-grant, and after an expiry.
		{[]step{{KindGranted, 0}, {KindWithdrawn, 20 * time.Minute}, {KindGranted, 30 * time.Minute}, {KindWithdrawn, 40 * time.Minute},
			{KindWithdrawn, 37 * time.Minute}, {KindGranted, 38 * time.Minute}}, KindWithdrawn},
		{[]step{{KindGranted, 10 * time.Minute}, {KindExpired, 0}, {KindWithdrawn, 7 * time.Minute}, {KindGranted, 8 * time.Minute}}, KindWithdrawn},
		{[]step{{KindGranted, 10 * time.Minute}, {KindExpired, 0}, {KindWithdrawn, 7 * time.Minute}, {KindGranted, 12 * time.Minute}}, KindGranted},
	} {
		seqs = append(seqs, c.steps)
		final[len(seqs)-1] = c.status
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
				for j, st := range kinds {
					k := st.kind
					exp := base.Add(time.Duration(48+j) * time.Hour)
					ev := Event{EventID: fmt.Sprintf("%s-%d", cust, j), CustomerID: cust, Purpose: "analytics.reporting", Kind: k,
						CapturedAt: base.Add(st.at), CapturedBy: fmt.Sprintf("by-%d", j), RecordedAt: base, RecordedBy: "t"}
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
				if st, ok := final[i]; ok && cur[0].Status != st {
					t.Fatalf("%v: ends %s, want %s", kinds, cur[0].Status, st)
				}
			}
		})
	}
}

// step is one event of a fold sequence: its kind and when it was captured (after base;
// an expiry is captured at the first grant's expiry instead).
type step struct {
	kind string
	at   time.Duration
}

// inOrder is a sequence captured a minute apart, in arrival order.
func inOrder(kinds ...string) []step {
	out := make([]step, len(kinds))
	for i, k := range kinds {
		out[i] = step{k, time.Duration(i) * time.Minute}
	}
	return out
}

func valueOr(c *Current) Current {
	if c == nil {
		return Current{}
	}
	return *c
}
