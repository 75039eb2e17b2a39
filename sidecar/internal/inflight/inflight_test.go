package inflight

import (
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	var c Counter
	if n := c.Wait(time.Hour); n != 0 {
		t.Fatalf("idle counter: %d", n)
	}
	c.Add(2)
	if n := c.Wait(30 * time.Millisecond); n != 2 {
		t.Fatalf("after the deadline with two running: %d, want 2", n)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		c.Add(-1)
		c.Add(-1)
	}()
	if n := c.Wait(20 * time.Second); n != 0 {
		t.Fatalf("after both ended: %d, want 0", n)
	}
}
