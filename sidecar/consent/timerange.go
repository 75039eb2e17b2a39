package consent

import (
	"fmt"
	"math"
	"net/http"
	"time"
)

// Times are stored (and held in the view) as int64 Unix nanoseconds, which only reach from
// 1677-09-21 to 2262-04-11; time.UnixNano is undefined outside that and in practice wraps: a
// "keep forever" retention deadline of 9999-12-31 (a usual CRM sentinel) would be stored as
// 1816 - past retention at once - and a grant captured in 1625 as 2209, after which every
// withdrawal is stale. So every time a write accepts must lie in [minTime, maxTime): whole
// years inside the representable range, leaving room for the skew margins added to them.
var (
	minTime = time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)
)

// timeRangeCode is the rejection of a time outside [minTime, maxTime).
const timeRangeCode = "invalid.time_out_of_range"

// checkTime is the one range validation every write path uses (consent events, customers,
// agreements, the import's dates): nil passes (no time given).
func checkTime(field string, t *time.Time) error {
	if t == nil || (!t.Before(minTime) && t.Before(maxTime)) {
		return nil
	}
	hint := ""
	if field == "retention_until" || field == "expires_at" {
		// A CRM's "never" (9999-12-31) has its own spelling here: no time at all.
		hint = fmt.Sprintf("; for \"never\" (no %s) omit the field", map[string]string{"retention_until": "retention deadline", "expires_at": "expiry"}[field])
	}
	return errf(http.StatusBadRequest, timeRangeCode, "%s %s is outside the supported range %s to %s%s",
		field, t.UTC().Format(time.RFC3339), minTime.Format(time.DateOnly), maxTime.Add(-time.Nanosecond).Format(time.DateOnly), hint)
}

// ns converts t to its stored form, or fails for a time the form cannot hold (never wraps).
func ns(t time.Time) (int64, error) {
	if err := checkTime("time", &t); err != nil {
		return 0, err
	}
	return t.UnixNano(), nil
}

// nsArgs converts times for one statement: the first out-of-range time is kept in err,
// so a statement's arguments read as one list and are checked once before it runs.
type nsArgs struct{ err error }

func (a *nsArgs) at(t time.Time) int64 {
	n, err := ns(t)
	if err != nil && a.err == nil {
		a.err = err
	}
	return n
}

// ptr is at for an optional time (nil: SQL NULL).
func (a *nsArgs) ptr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return a.at(*t)
}

// checkEventTimes refuses a batch holding a time the store cannot hold, before any of it is
// written (event() refuses such input already; this is the store's own guard).
func checkEventTimes(evs []Event) error {
	for _, ev := range evs {
		for _, t := range []*time.Time{&ev.CapturedAt, ev.ExpiresAt, &ev.RecordedAt} {
			if err := checkTime("time", t); err != nil {
				return fmt.Errorf("event %s: %w", ev.EventID, err)
			}
		}
	}
	return nil
}

// viewNS is a time in the view's nanosecond form (0: none). The view is fed only times the
// database accepted (all in range); should one not be, it saturates instead of wrapping, so
// the order of times - which decides staleness and expiry - is kept.
func viewNS(t *time.Time) int64 {
	switch {
	case t == nil:
		return 0
	case t.Before(minTime):
		return math.MinInt64
	case !t.Before(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}
