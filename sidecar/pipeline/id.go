package pipeline

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// crockford is the ULID alphabet (Crockford base32: no I, L, O, U).
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a decision id: a ULID (48-bit millisecond timestamp, 80 random bits from
// crypto/rand, 26 Crockford base32 characters). Ids sort by time, so the decision log and
// reviewers can order by id, and 80 random bits make collisions within a millisecond
// negligible.
func NewID(t time.Time) string {
	var b [16]byte
	ms := uint64(t.UnixMilli())
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], ms)
	copy(b[:6], ts[2:])
	if _, err := rand.Read(b[6:]); err != nil {
		// crypto/rand does not fail on supported platforms; a predictable id would be worse
		// than no service.
		panic("decision id: crypto/rand: " + err.Error())
	}
	return encodeULID(b)
}

// encodeULID writes 128 bits as 26 base32 digits (the first digit carries 3 bits).
func encodeULID(b [16]byte) string {
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	var out [26]byte
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
