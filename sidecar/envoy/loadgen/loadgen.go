// Package loadgen is an in-repo load generator for ext_authz servers: it sends CheckRequests
// over real gRPC connections, either as fast as the server answers (closed loop, for
// throughput) or at a fixed rate (open loop, for latency). In open-loop mode latency is
// measured from each request's scheduled send time, so a stalled server cannot hide its queue
// (no coordinated omission).
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/consentry/consentry/sidecar/internal/pace"
)

// Options describe one run.
type Options struct {
	// Target is the server address (host:port).
	Target string
	// DialOptions replace the default (plaintext) transport options.
	DialOptions []grpc.DialOption
	// Conns is the number of gRPC connections (default 4); requests spread round-robin.
	Conns int
	// Concurrency is the number of in-flight requests at most (default 32).
	Concurrency int
	// Rate in requests per second; 0 sends as fast as the server answers.
	Rate float64
	// Count is the number of requests to send.
	Count int
	// Requests are sent in turn.
	Requests []*authv3.CheckRequest
	// Timeout per request (default 1s, like a generous Envoy timeout).
	Timeout time.Duration
}

// Result summarizes a run.
type Result struct {
	Sent, Allowed, Denied, Errors int
	Elapsed                       time.Duration
	// RPS is completed requests per second of wall time.
	RPS                float64
	P50, P90, P99, Max time.Duration
}

func (r *Result) String() string {
	return fmt.Sprintf("%d requests in %s: %.0f/s, allowed %d, denied %d, errors %d, p50 %s p90 %s p99 %s max %s",
		r.Sent, r.Elapsed.Round(time.Millisecond), r.RPS, r.Allowed, r.Denied, r.Errors, r.P50, r.P90, r.P99, r.Max)
}

// Run executes the load.
func Run(ctx context.Context, o Options) (*Result, error) {
	if len(o.Requests) == 0 || o.Count <= 0 {
		return nil, errors.New("loadgen: requests and a positive count are required")
	}
	if o.Conns <= 0 {
		o.Conns = 4
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	dial := o.DialOptions
	if dial == nil {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	clients := make([]authv3.AuthorizationClient, o.Conns)
	for i := range clients {
		cc, err := grpc.NewClient(o.Target, dial...)
		if err != nil {
			return nil, fmt.Errorf("loadgen: dial: %w", err)
		}
		defer cc.Close()
		clients[i] = authv3.NewAuthorizationClient(cc)
	}
	// Warm every connection so that connection setup is not measured.
	for _, c := range clients {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.Check(cctx, o.Requests[0])
		cancel()
		if err != nil {
			return nil, fmt.Errorf("loadgen: warm-up: %w", err)
		}
	}

	type job struct {
		i         int
		scheduled time.Time
	}
	jobs := make(chan job, o.Concurrency*4)
	lat := make([][]time.Duration, o.Concurrency)
	var allowed, denied, errs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for j := range jobs {
				c := clients[j.i%len(clients)]
				rctx, cancel := context.WithTimeout(ctx, o.Timeout)
				resp, err := c.Check(rctx, o.Requests[j.i%len(o.Requests)])
				cancel()
				d := time.Since(j.scheduled)
				lat[w] = append(lat[w], d)
				switch {
				case err != nil:
					errs.Add(1)
				case codes.Code(resp.GetStatus().GetCode()) == codes.OK:
					allowed.Add(1)
				default:
					denied.Add(1)
				}
			}
		}(w)
	}
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) / o.Rate)
	}
feed:
	for i := 0; i < o.Count; i++ {
		at := time.Now()
		if interval > 0 {
			at = start.Add(time.Duration(i) * interval)
			pace.Sleep(time.Until(at)) // sub-millisecond precision; see package pace
		}
		select {
		case jobs <- job{i: i, scheduled: at}:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	r := &Result{Sent: len(all), Allowed: int(allowed.Load()), Denied: int(denied.Load()), Errors: int(errs.Load()), Elapsed: elapsed}
	if len(all) > 0 {
		r.RPS = float64(len(all)) / elapsed.Seconds()
		r.P50 = all[len(all)*50/100]
		r.P90 = all[len(all)*90/100]
		r.P99 = all[min(len(all)-1, len(all)*99/100)]
		r.Max = all[len(all)-1]
	}
	return r, ctx.Err()
}
