package loadgen

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// Main runs the generator as its own process (e2e/cmd/authzload): the requests come from a
// file written by WriteRequests, the options from flags, and the Result goes to stdout as JSON.
// A separate process is what Envoy is to consentry: the generator's own goroutines then do not
// share the server's Go scheduler, so a busy server cannot delay the generator's send times
// inside one runtime (they still share the machine's cores, as Envoy and the sidecar do).
func Main(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("authzload", flag.ContinueOnError)
	var o Options
	reqFile := fs.String("requests", "", "file of CheckRequests (written by loadgen.WriteRequests)")
	fs.StringVar(&o.Target, "target", "", "server address host:port")
	fs.IntVar(&o.Count, "count", 1000, "requests to send")
	fs.Float64Var(&o.Rate, "rate", 0, "requests per second (0: as fast as the server answers)")
	fs.IntVar(&o.Concurrency, "concurrency", 32, "requests in flight at most")
	fs.IntVar(&o.Conns, "conns", 4, "gRPC connections")
	fs.DurationVar(&o.Timeout, "timeout", time.Second, "timeout per request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Target == "" || *reqFile == "" {
		return errors.New("-target and -requests are required")
	}
	reqs, err := ReadRequests(*reqFile)
	if err != nil {
		return err
	}
	o.Requests = reqs
	r, err := Run(context.Background(), o)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(r)
}

// WriteRequests stores reqs in path, each as its length (uvarint) and its protobuf encoding.
func WriteRequests(path string, reqs []*authv3.CheckRequest) error {
	var buf []byte
	for _, r := range reqs {
		b, err := proto.Marshal(r)
		if err != nil {
			return fmt.Errorf("loadgen: encode request: %w", err)
		}
		buf = binary.AppendUvarint(buf, uint64(len(b)))
		buf = append(buf, b...)
	}
	return os.WriteFile(path, buf, 0o600)
}

// ReadRequests reads a file written by WriteRequests.
func ReadRequests(path string) ([]*authv3.CheckRequest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var reqs []*authv3.CheckRequest
	for {
		n, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("loadgen: %s: %w", path, err)
		}
		if n > 16<<20 {
			return nil, fmt.Errorf("loadgen: %s: request of %d bytes", path, n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("loadgen: %s: truncated request: %w", path, err)
		}
		r := &authv3.CheckRequest{}
		if err := proto.Unmarshal(b, r); err != nil {
			return nil, fmt.Errorf("loadgen: %s: %w", path, err)
		}
		reqs = append(reqs, r)
	}
	if len(reqs) == 0 {
		return nil, fmt.Errorf("loadgen: %s holds no requests", path)
	}
	return reqs, nil
}
