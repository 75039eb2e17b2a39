package auditlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

var (
	// ErrNoLog: the directory holds no decision log segment (empty, not a log, or a typo), so a
	// query or report would say "nothing recorded" about nothing.
	ErrNoLog = errors.New("no decision log there")
	// ErrPseudonymKeyMismatch: the log's checkpoints show that records searched were written
	// with another pseudonym key; no customer pseudonym made with this one can match them.
	ErrPseudonymKeyMismatch = errors.New("the pseudonym key is not the log's")
)

// QueryStats is what a query saw besides its matches: how much it searched, whether the
// pseudonym key is the log's, and whether older records were deleted.
type QueryStats struct {
	// Segments is the number of segment files (plain or gzip) searched.
	Segments int `json:"segments"`
	// Records counts every record read; Decisions the decision records in the time range.
	Records   int `json:"records"`
	Decisions int `json:"decisions"`
	// Intents counts the intent records in the time range (resolved or not). Unresolved
	// counts those passed to the caller because no decision record resolved them (included in
	// Matched).
	Intents    int `json:"intents"`
	Unresolved int `json:"unresolved"`
	// Matched counts the records passed to the caller.
	Matched int `json:"matched"`
	// First and Last are the oldest and newest timestamps of the decisions in range.
	First time.Time `json:"first,omitzero"`
	Last  time.Time `json:"last,omitzero"`
	// With Filter.KeyFingerprint: the decisions in range that a pseudonym made with the key
	// could match (all of them for a customer; for a subject alone, those whose subject is a
	// customer, logged by pseudonym) written with that key (KeyChecked), with another key
	// (KeyOther; OtherKeys are those fingerprints), and with a key the log does not name
	// (KeyUnknown: written before checkpoints carried the fingerprint). A checkpoint names the
	// key of the records since the checkpoint before it, so a record's key is the one the
	// checkpoint after it names: an "open" checkpoint left out (its signer was down at start)
	// then costs nothing. Except across a restart: the records just before an "open"
	// checkpoint were written by the run before it (a crash left them without their closing
	// checkpoint), under the key the checkpoint before them names (a crash followed by a start
	// whose "open" was left out leaves nothing to tell the runs apart: the crashed run's tail
	// is then credited to the next run's key). The records after the last checkpoint (a live
	// log's tail) take its key.
	KeyChecked int      `json:"key_checked"`
	KeyOther   int      `json:"key_other"`
	KeyUnknown int      `json:"key_unknown"`
	OtherKeys  []string `json:"other_keys,omitempty"`
	// DeletedBefore is set when the log no longer starts at seq 0: the records before that
	// time, the oldest decision kept, are gone. DeletedByRetention tells whether a retention
	// record accounts for them (otherwise `audit verify` reports the missing head).
	DeletedBefore      time.Time `json:"deleted_before,omitzero"`
	DeletedByRetention bool      `json:"deleted_by_retention,omitempty"`
}

// statsScan fills QueryStats from every line of a query's scan, decoding as little as it can.
type statsScan struct {
	f  *Filter
	st *QueryStats
	// ranged: the filter has a time range, so a decision's timestamp must be read.
	ranged bool
	first  bool // the next line is the log's first
	// key is the fingerprint the last checkpoint named ("" none: an older log); keyKnown
	// whether a checkpoint was seen; pending counts the decisions in range since the last one,
	// whose key the next checkpoint names.
	key      string
	keyKnown bool
	pending  int
	firstSeq uint64
	// firstTime is the timestamp of the oldest decision kept (in log order), or of the first
	// record while there is none.
	firstTime     time.Time
	firstDecision bool
	lastRaw       []byte // the last decision's timestamp, without a time range
}

func newStatsScan(f *Filter, st *QueryStats) *statsScan {
	return &statsScan{f: f, st: st, ranged: !f.Since.IsZero() || !f.Until.IsZero(), first: true}
}

func (s *statsScan) line(seg string, line []byte) error {
	s.st.Records++
	if s.first {
		s.first = false
		var h struct {
			Seq       uint64    `json:"seq"`
			Timestamp time.Time `json:"timestamp"`
		}
		if err := json.Unmarshal(line, &h); err != nil {
			return fmt.Errorf("%s: %w", seg, err)
		}
		s.firstSeq, s.firstTime = h.Seq, h.Timestamp
	}
	switch lineType(line) {
	case TypeDecision:
		s.decision(line)
	case TypeIntent:
		s.intent(line)
	case TypeCheckpoint:
		s.checkpoint(line)
	case TypeRetention:
		s.st.DeletedByRetention = true
	}
	return nil
}

func (s *statsScan) decision(line []byte) {
	if !s.firstDecision {
		// Checkpoints carry the writer's clock, decisions the request's time: the cut is said
		// in the decisions' time.
		s.firstDecision = true
		if ts, ok := lineTimestamp(line); ok {
			s.firstTime = ts
		}
	}
	if s.ranged {
		if ts, ok := lineTimestamp(line); ok {
			if !s.f.inRange(ts) {
				return
			}
			if s.st.First.IsZero() {
				s.st.First = ts
			}
			s.st.Last = ts
		}
	} else {
		// Every decision is in range: keep the last one's timestamp text, parse it once.
		raw := stringMember(line, `"timestamp":"`)
		if s.st.Decisions == 0 {
			s.st.First, _ = time.Parse(time.RFC3339Nano, string(raw))
		}
		s.lastRaw = append(s.lastRaw[:0], raw...)
	}
	s.st.Decisions++
	if s.f.KeyFingerprint == "" || !s.f.keyDependent(line) {
		return
	}
	s.pending++
}

// intent counts an intent record in range. Intents are not decisions here: Decisions, First,
// Last and the start of the log speak of the decisions (records_searched in the report), and
// the pseudonym-key check ignores intents. An intent is written in the same run, so with the
// same pseudonym key, as the decision record that resolves it, which is counted; and an
// unresolved one was cut off in a run whose other decisions carry that key too. Counting
// intents would count every write twice in "N of the M decision records searched" and tell
// nothing the decisions do not.
func (s *statsScan) intent(line []byte) {
	if s.ranged {
		if ts, ok := lineTimestamp(line); !ok || !s.f.inRange(ts) {
			return
		}
	}
	s.st.Intents++
}

// keyDependent reports whether a decision record could match f only through a pseudonym
// made with the key: with a customer, any; with a subject alone, one whose subject is a
// customer (logged by the pseudonym of its customer id). An employee is logged by its id,
// which matches whatever the key: a record written with another key does not make a search
// for an employee wrong.
func (f *Filter) keyDependent(line []byte) bool {
	return f.Customer != "" || bytes.Contains(line, []byte(`"subject":{"id":"cp_`))
}

// count attributes n decisions to the key fingerprint key.
func (s *statsScan) count(key string, n int) {
	switch {
	case n == 0:
	case key == "":
		s.st.KeyUnknown += n
	case key == s.f.KeyFingerprint:
		s.st.KeyChecked += n
	default:
		s.st.KeyOther += n
		if !slices.Contains(s.st.OtherKeys, key) {
			s.st.OtherKeys = append(s.st.OtherKeys, key)
		}
	}
}

func (s *statsScan) checkpoint(line []byte) {
	key := string(stringMember(line, `"pseudonym_key":"`))
	switch {
	case string(stringMember(line, `"reason":"`)) != CheckpointOpen:
		s.count(key, s.pending)
	case s.keyKnown:
		s.count(s.key, s.pending) // the run before the restart
	default:
		s.count("", s.pending) // no checkpoint of that run was searched
	}
	s.pending = 0
	s.key, s.keyKnown = key, true
}

// finish settles what only the end of the scan tells.
func (s *statsScan) finish() {
	// The records after the last checkpoint (none: not known).
	s.count(s.key, s.pending)
	s.pending = 0
	if len(s.lastRaw) > 0 {
		s.st.Last, _ = time.Parse(time.RFC3339Nano, string(s.lastRaw))
	}
	if s.st.Records > 0 && s.firstSeq > 0 {
		s.st.DeletedBefore = s.firstTime
	}
}

var typeMembers = [...]struct {
	typ string
	b   []byte
}{
	{TypeDecision, []byte(`"type":"decision"`)},
	{TypeCheckpoint, []byte(`"type":"checkpoint"`)},
	{TypeRetention, []byte(`"type":"retention"`)},
	{TypeErasure, []byte(`"type":"erasure"`)},
	{TypeIntent, []byte(`"type":"intent"`)},
}

// lineType returns a record line's type without decoding it. "type" sorts after every member
// the writer writes today, so it ends the line before the hash the writer appends; a line
// where it does not is searched, decision first: a decision's input may hold a nested
// "type" member, which the other records have none of.
func lineType(line []byte) string {
	if end := len(line) - hashSuffixLen; end > 0 {
		for _, m := range typeMembers {
			if bytes.HasSuffix(line[:end], m.b) {
				return m.typ
			}
		}
	}
	for _, m := range typeMembers {
		if bytes.Contains(line, m.b) {
			return m.typ
		}
	}
	return ""
}

// lineTimestamp reads a record line's top-level timestamp without decoding it: the last
// `"timestamp":"` of the line, as the member sorts after input, result and subject (the only
// objects that could nest one) and JSON escapes every quote inside strings.
func lineTimestamp(line []byte) (time.Time, bool) {
	v := stringMember(line, `"timestamp":"`)
	if len(v) == 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(v))
	return t, err == nil
}

// stringMember returns the value of the last string member opened by key (`"name":"`) in
// line, nil when there is none. Values read this way (fingerprints, timestamps) hold no
// escapes. The members looked for sort near the end of their records, where LastIndex starts.
func stringMember(line []byte, key string) []byte {
	i := bytes.LastIndex(line, []byte(key))
	if i < 0 {
		return nil
	}
	v := line[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return nil
	}
	return v[:j]
}
