package pace

import (
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 0} {
		t0 := time.Now()
		Sleep(d)
		if e := time.Since(t0); e > 100*time.Millisecond {
			t.Errorf("Sleep(%s) took %s", d, e)
		}
	}
	for _, d := range []time.Duration{300 * time.Microsecond, 3 * time.Millisecond} {
		t0 := time.Now()
		Sleep(d)
		if e := time.Since(t0); e < d {
			t.Errorf("Sleep(%s) returned after %s", d, e)
		}
	}
}
