package app_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/vaultkeys"

	"github.com/consentry/consentry/sidecar/internal/syncbuf"
)

// TestShutdownDelayKeepsServingWhileNotReady: after the stop request (the first SIGTERM),
// /ready answers 503 "shutting down" and gRPC health NOT_SERVING while the proxy still
// answers, for admin.shutdown_delay; then the listeners drain and the decision log closes,
// each step logged.
func TestShutdownDelayKeepsServingWhileNotReady(t *testing.T) {
	const delay = 2 * time.Second
	root := pipelinetest.RepoRoot()
	dir := t.TempDir()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer up.Close()
	adminAddr, grpcAddr, proxyAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	cfg, err := config.Parse("test.yaml", []byte(fmt.Sprintf(`
policy:
  dir: %[1]s/policies
  require_signatures: false
engine:
  timeout: 5s
admin:
  listen: %[2]s
  shutdown_delay: %[7]s
routes:
  file: %[1]s/deploy/routes/democrm.yaml
state:
  data_dir: %[5]s/state
  purposes_file: %[1]s/policies/data/consentry/catalog/data.json
decision_log:
  dir: %[5]s/decisions
envoy:
  listen: %[3]s
  response_phase: true
proxy:
  listen: %[4]s
  upstream: %[6]s
`, root, adminAddr, grpcAddr, proxyAddr, dir, up.URL, delay)))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	a, err := app.New(context.Background(), cfg, slog.New(slog.NewJSONHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitReady(t, "http://"+adminAddr+"/ready")
	waitHealth(t, grpcAddr, healthpb.HealthCheckResponse_SERVING)

	stopAt := time.Now()
	cancel()
	var code int
	var body string
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if code, body = readyBody("http://" + adminAddr); code == http.StatusServiceUnavailable {
			break
		}
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Fatalf("/ready after the stop request: %d %s, want 503 shutting down", code, body)
	}
	waitHealth(t, grpcAddr, healthpb.HealthCheckResponse_NOT_SERVING)
	resp, err := http.Get("http://" + proxyAddr + "/api/customers/c-1001")
	if err != nil {
		t.Fatalf("the proxy refused a request during the shutdown delay: %v", err)
	}
	resp.Body.Close()
	if since := time.Since(stopAt); since >= delay {
		t.Fatalf("the checks took %v, longer than the delay: the test proves nothing", since)
	}
	select {
	case err := <-done:
		done <- err // for the deferred receive
		t.Fatalf("Run returned within the shutdown delay: %v", err)
	default:
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the deferred receive
	if took := time.Since(stopAt); took < delay {
		t.Fatalf("Run returned %v after the stop request, before shutdown_delay %v", took, delay)
	}
	out := logs.String()
	steps := []string{"shutdown requested", "proxy: draining", "envoy: draining", "decision log closed", "consentry stopped"}
	for _, step := range steps {
		if !strings.Contains(out, `"msg":"`+step) {
			t.Errorf("no %q in the log:\n%s", step, out)
		}
	}
	if i, j := strings.Index(out, "proxy: stopped"), strings.Index(out, "decision log closed"); i < 0 || j < i {
		t.Errorf("the decision log closed before the proxy stopped:\n%s", out)
	}
}

type failing struct{ err error }

func (f failing) Name() string              { return "failing" }
func (f failing) Run(context.Context) error { return f.err }

// slowStop takes a while to stop once asked.
type slowStop struct{ hold time.Duration }

func (s slowStop) Name() string { return "slow-stop" }
func (s slowStop) Run(ctx context.Context) error {
	<-ctx.Done()
	time.Sleep(s.hold)
	return nil
}

// TestComponentFailureLoggedAtOnce: a component's error is logged when it happens, not once
// every other component has stopped (a component slow to stop, or one that never does, hid the
// cause: the process sat there without a word).
func TestComponentFailureLoggedAtOnce(t *testing.T) {
	logs := &syncbuf.Buffer{}
	cfg := &config.Config{Admin: admin.Config{Listen: freeAddr(t)}}
	a := &app.App{Config: cfg, Log: slog.New(slog.NewJSONHandler(logs, nil)), Admin: admin.New(cfg.Admin, prometheus.NewRegistry())}
	cause := errors.New("listen tcp 127.0.0.1:9400: bind: address already in use")
	a.Add(failing{cause})
	a.Add(slowStop{hold: 3 * time.Second})
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String(), "address already in use") {
		if time.Now().After(deadline) {
			t.Fatalf("the failure is not logged while the other components stop:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := <-done; !errors.Is(err, cause) {
		t.Fatalf("Run: %v, want the component's error", err)
	}
}

// TestKubernetesGracePeriodCoversShutdown: the shipped manifest gives consentry time for its
// whole stop (shutdown delay, drain, the wait for requests still at the CRM, closing the
// decision log) before the kubelet's SIGKILL, and keeps the CRM up while consentry still
// forwards to it. Without terminationGracePeriodSeconds Kubernetes allows 30s.
func TestKubernetesGracePeriodCoversShutdown(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(pipelinetest.RepoRoot(), "deploy", "kubernetes", "crm-with-consentry.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type container struct {
		Name      string `yaml:"name"`
		Lifecycle struct {
			PreStop struct {
				Sleep struct {
					Seconds int `yaml:"seconds"`
				} `yaml:"sleep"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
	}
	var (
		sidecarYAML string
		grace       = -1
		crmPreStop  = -1
	)
	for _, d := range strings.Split(string(raw), "\n---") {
		var doc struct {
			Kind     string                `yaml:"kind"`
			Metadata struct{ Name string } `yaml:"metadata"`
			Data     map[string]string     `yaml:"data"`
			Spec     struct {
				Template struct {
					Spec struct {
						Grace      *int        `yaml:"terminationGracePeriodSeconds"`
						Containers []container `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := yaml.Unmarshal([]byte(d), &doc); err != nil {
			t.Fatal(err)
		}
		switch doc.Kind {
		case "ConfigMap":
			if doc.Metadata.Name == "consentry-config" {
				sidecarYAML = doc.Data["consentry.yaml"]
			}
		case "StatefulSet":
			if g := doc.Spec.Template.Spec.Grace; g != nil {
				grace = *g
			}
			for _, c := range doc.Spec.Template.Spec.Containers {
				if c.Name == "crm" {
					crmPreStop = c.Lifecycle.PreStop.Sleep.Seconds
				}
			}
		}
	}
	var sections struct {
		Admin    admin.Config     `yaml:"admin"`
		Proxy    proxy.Config     `yaml:"proxy"`
		Pipeline pipeline.Config  `yaml:"pipeline"`
		Vault    vaultkeys.Config `yaml:"vault"`
	}
	if err := yaml.Unmarshal([]byte(sidecarYAML), &sections); err != nil {
		t.Fatal(err)
	}
	ad, px, pl, vt := sections.Admin.WithDefaults(), sections.Proxy.WithDefaults(), sections.Pipeline.WithDefaults(), sections.Vault.WithDefaults()
	if ad.ShutdownDelay <= 0 {
		t.Error("admin.shutdown_delay is not set: the pod refuses connections Kubernetes still sends it")
	}
	const logClose = 5 * time.Second                                                             // the final checkpoint, signed through Vault
	inFlight := 3*pl.Timeout + 2*vt.Timeout + px.UpstreamTimeout + pl.AuditTimeout + time.Second // proxy handlerBound
	budget := ad.ShutdownDelay + px.ShutdownTimeout + inFlight + logClose
	if time.Duration(grace)*time.Second < budget {
		t.Errorf("terminationGracePeriodSeconds %d, want at least %v (shutdown_delay %v + shutdown_timeout %v + in-flight wait %v + log close %v)",
			grace, budget, ad.ShutdownDelay, px.ShutdownTimeout, inFlight, logClose)
	}
	if forwarding := ad.ShutdownDelay + px.ShutdownTimeout; time.Duration(crmPreStop)*time.Second < forwarding {
		t.Errorf("the CRM's preStop sleep is %ds; consentry forwards to it for %v after SIGTERM", crmPreStop, forwarding)
	}
}
