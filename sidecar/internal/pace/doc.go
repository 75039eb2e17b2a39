// Package pace sleeps with sub-millisecond precision, for the open-loop load generators of the
// latency benchmarks (sidecar/envoy/loadgen, the bundle activation benchmark): they measure
// latency from each request's scheduled send time, so a late sender shows up as latency.
package pace
