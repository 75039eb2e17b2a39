package envoy

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/identity"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
)

// FrontDoor is the name this door gives itself in inputs and the decision log.
const FrontDoor = "ext_authz"

// MetadataNamespace is the dynamic metadata namespace Envoy stores the decision under (the
// filter's own namespace, envoy.filters.http.ext_authz, when emitted by ext_authz).
const MetadataNamespace = "consentry"

// Checker is the pipeline as this door uses it.
type Checker interface {
	Check(ctx context.Context, req *pipeline.Request) *pipeline.Outcome
	Record(ctx context.Context, out *pipeline.Outcome, enf audit.Enforcement) error
}

var _ Checker = (*pipeline.Pipeline)(nil)

// Authz implements envoy.service.auth.v3.Authorization.
type Authz struct {
	authv3.UnimplementedAuthorizationServer
	cfg     Config
	checker Checker
	log     *slog.Logger
	fulfil  []string
}

var _ authv3.AuthorizationServer = (*Authz)(nil)

// NewAuthz returns the Authorization service (registered by New; exported for tests and for
// embedding on another gRPC server).
func NewAuthz(cfg Config, checker Checker, log *slog.Logger) *Authz {
	a := &Authz{cfg: cfg.WithDefaults(), checker: checker, log: log}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.cfg.ResponsePhase {
		a.fulfil = []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}
	}
	return a
}

// Check answers one ext_authz request. It never returns an error: a failure anywhere is a
// denied response (503), so Envoy's failure_mode_allow is never consulted.
func (a *Authz) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, _ error) {
	defer func() {
		if r := recover(); r != nil {
			a.log.Error("ext_authz panic", "panic", r, "stack", string(debug.Stack()))
			resp = internalDeny()
		}
	}()
	preq := RequestFromCheck(req)
	preq.CanFulfil = a.fulfil
	out := a.checker.Check(ctx, preq)
	// Envoy forwards the raw :path, not the decided one: only its canonical spelling passes.
	refuseNonCanonical(out, preq.Target)
	// ext_authz enforces nothing after this answer: record now. A log failure turns the
	// outcome into a 503 deny before it is sent.
	enf := audit.Enforcement{}
	if !out.Allowed() {
		enf.Status = out.Status
	}
	_ = a.checker.Record(ctx, out, enf)
	return wireResponse(out), nil
}

// RequestFromCheck converts a CheckRequest into the pipeline's request. Missing parts stay
// empty and the pipeline denies (no method, no path, no credential).
func RequestFromCheck(req *authv3.CheckRequest) *pipeline.Request {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	out := &pipeline.Request{
		FrontDoor: FrontDoor,
		ID:        h.GetId(),
		Method:    h.GetMethod(),
		Target:    h.GetPath(),
		Host:      h.GetHost(),
		Headers:   headersOf(h),
		Source: input.Source{
			Address:   socketAddress(attrs.GetSource().GetAddress()),
			Principal: peerPrincipal(attrs.GetSource()),
		},
	}
	out.Body, out.BodyComplete = bodyOf(h, out.Headers)
	return out
}

// peerPrincipal names the mutual-TLS peer the way the Fiber proxy names its own clients
// (identity.SPIFFEFromCert): by the SPIFFE id that is the certificate's only spiffe:// URI
// SAN. Envoy's source.principal is the first URI SAN of any scheme (else a DNS SAN, else the
// subject), so with two SPIFFE ids, or an https URI before the SPIFFE id, it would name
// another service than the proxy does. With the certificate at hand
// (include_peer_certificate, URL-encoded PEM) the id is read from it; a certificate that
// cannot be read names no one. Without it, only a spiffe:// principal is taken.
func peerPrincipal(src *authv3.AttributeContext_Peer) string {
	if enc := src.GetCertificate(); enc != "" {
		// Envoy percent-encodes the PEM and never leaves a raw '+', so query unescaping also
		// reads a '+'-for-space encoding.
		raw, err := url.QueryUnescape(enc)
		if err != nil {
			return ""
		}
		block, _ := pem.Decode([]byte(raw))
		if block == nil || block.Type != "CERTIFICATE" {
			return ""
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return ""
		}
		return identity.SPIFFEFromCert(cert)
	}
	if p := src.GetPrincipal(); strings.HasPrefix(p, "spiffe://") {
		return p
	}
	return ""
}

// headersOf prefers header_map (Envoy's encode_raw_headers: one entry per header line, so
// repeated headers keep every value, raw bytes included) over the headers map (where Envoy
// has already joined repeated headers with ",").
func headersOf(h *authv3.AttributeContext_HttpRequest) map[string][]string {
	// One backing array for all values; each list is capped so that a repeated header's
	// append copies instead of overwriting its neighbour.
	if hm := h.GetHeaderMap(); hm != nil && len(hm.GetHeaders()) > 0 {
		out := make(map[string][]string, len(hm.GetHeaders()))
		vals := make([]string, len(hm.GetHeaders()))
		for i, hv := range hm.GetHeaders() {
			v := hv.GetValue()
			if len(hv.GetRawValue()) > 0 {
				v = string(hv.GetRawValue())
			}
			if prev, ok := out[hv.GetKey()]; ok {
				out[hv.GetKey()] = append(prev, v)
				continue
			}
			vals[i] = v
			out[hv.GetKey()] = vals[i : i+1 : i+1]
		}
		return out
	}
	out := make(map[string][]string, len(h.GetHeaders()))
	vals := make([]string, len(h.GetHeaders()))
	i := 0
	for k, v := range h.GetHeaders() {
		vals[i] = v
		out[k] = vals[i : i+1 : i+1]
		i++
	}
	return out
}

// bodyOf returns the body Envoy buffered and whether it is the whole body. Envoy marks a
// truncated body with x-envoy-auth-partial-body: true. A missing body is complete only when
// the request says so with content-length: 0: HTTP/2 and HTTP/3 make content-length optional
// (and Envoy sends no body at all without with_request_body), so a write that declares
// nothing may still stream one; it is decided on every field the route accepts.
func bodyOf(h *authv3.AttributeContext_HttpRequest, headers map[string][]string) ([]byte, bool) {
	body := h.GetRawBody()
	if len(body) == 0 && h.GetBody() != "" {
		body = []byte(h.GetBody())
	}
	for k, v := range headers {
		if strings.EqualFold(k, "x-envoy-auth-partial-body") && len(v) > 0 && v[0] == "true" {
			return body, false
		}
	}
	if len(body) > 0 {
		return body, true
	}
	for k, v := range headers {
		if strings.EqualFold(k, "content-length") {
			return nil, len(v) == 1 && strings.TrimSpace(v[0]) == "0"
		}
	}
	return nil, false
}

func socketAddress(a *corev3.Address) string {
	sa := a.GetSocketAddress()
	if sa == nil {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}

// ResponseFromOutcome converts a pipeline outcome into the ext_authz answer.
func ResponseFromOutcome(out *pipeline.Outcome) *authv3.CheckResponse {
	return responseFromOutcome(out, true)
}

// responseFromOutcome builds the answer, with the dynamic metadata as a structpb tree when
// withMetadata (the gRPC handler appends it pre-encoded instead: authz_wire.go).
func responseFromOutcome(out *pipeline.Outcome, withMetadata bool) *authv3.CheckResponse {
	var md *structpb.Struct
	if withMetadata {
		md = metadata(out)
	}
	if out.Allowed() {
		hv := newHeaderValues(len(out.UpstreamHeaders) + 1)
		set := make([]*corev3.HeaderValueOption, 0, len(out.UpstreamHeaders))
		for _, k := range sortedKeys(out.UpstreamHeaders) {
			set = append(set, hv.overwrite(k, out.UpstreamHeaders[k]))
		}
		// Headers consentry sets are overwritten, not removed: Envoy may apply removals after
		// additions, which would drop our own values.
		var remove []string
		for _, k := range out.RemoveHeaders {
			if _, ours := out.UpstreamHeaders[k]; !ours {
				remove = append(remove, k)
			}
		}
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:              set,
				HeadersToRemove:      remove,
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{hv.overwrite(pipeline.HeaderDecisionID, out.DecisionID)},
			}},
			DynamicMetadata: md,
		}
	}
	code := codes.PermissionDenied
	if out.Status == http.StatusUnauthorized {
		code = codes.Unauthenticated
	}
	msg := ""
	if len(out.Decision.Reasons) > 0 {
		msg = out.Decision.Reasons[0].Code
	}
	hv := newHeaderValues(len(out.ResponseHeaders))
	hdrs := make([]*corev3.HeaderValueOption, 0, len(out.ResponseHeaders))
	for _, k := range sortedKeys(out.ResponseHeaders) {
		hdrs = append(hdrs, hv.overwrite(k, out.ResponseHeaders[k]))
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: msg},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			// Envoy passes the number through as the HTTP status, including 451 which the
			// StatusCode enum does not name.
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(out.Status)},
			Headers: hdrs,
			Body:    string(out.Body),
		}},
		DynamicMetadata: md,
	}
}

// metadata is the decision as Envoy dynamic metadata (access logs, later filters such as
// ext_proc): decision id, allow, status, reason codes, purpose, route and field outcomes.
// Strings that are not valid UTF-8 (which protobuf cannot carry) reduce it to the decision id.
func metadata(out *pipeline.Outcome) *structpb.Struct {
	d := out.Decision
	// One allocation for all values and one per kind of value instead of two per value.
	n := len(d.Reasons) + len(d.Fields) + len(d.KeyScopes) + 6
	b := mdBuilder{vals: make([]structpb.Value, 0, n), strs: make([]structpb.Value_StringValue, 0, n)}
	reasons := make([]*structpb.Value, len(d.Reasons))
	for i, r := range d.Reasons {
		reasons[i] = b.str(r.Code)
	}
	fields := make(map[string]*structpb.Value, len(d.Fields))
	for name, f := range d.Fields {
		b.check(name)
		fields[name] = b.str(f.Outcome)
	}
	scopes := make([]*structpb.Value, len(d.KeyScopes))
	for i, s := range d.KeyScopes {
		scopes[i] = b.str(s)
	}
	lists := make([]structpb.ListValue, 2)
	lists[0].Values, lists[1].Values = reasons, scopes
	objs := make([]structpb.Struct, 2)
	objs[0].Fields = fields
	m := make(map[string]*structpb.Value, 10)
	m["decision_id"] = b.str(out.DecisionID)
	m["allow"] = structpb.NewBoolValue(d.Allow)
	m["status"] = structpb.NewNumberValue(float64(out.Status))
	m["reasons"] = &structpb.Value{Kind: &structpb.Value_ListValue{ListValue: &lists[0]}}
	m["fields"] = &structpb.Value{Kind: &structpb.Value_StructValue{StructValue: &objs[0]}}
	m["key_scopes"] = &structpb.Value{Kind: &structpb.Value_ListValue{ListValue: &lists[1]}}
	if out.Input != nil {
		m["purpose"] = b.str(out.Input.Purpose)
		m["route"] = b.str(out.Input.Request.Route)
		m["customer_id"] = b.str(out.Input.Resource.CustomerID)
	}
	if out.Revision != "" {
		m["revision"] = b.str(out.Revision)
	}
	if b.bad {
		return &structpb.Struct{Fields: map[string]*structpb.Value{"decision_id": structpb.NewStringValue(out.DecisionID)}}
	}
	objs[1].Fields = m
	return &objs[1]
}

// mdBuilder hands out string values from preallocated slices.
type mdBuilder struct {
	vals []structpb.Value
	strs []structpb.Value_StringValue
	bad  bool
}

func (b *mdBuilder) check(s string) {
	if !utf8.ValidString(s) {
		b.bad = true
	}
}

func (b *mdBuilder) str(s string) *structpb.Value {
	b.check(s)
	if len(b.vals) == cap(b.vals) {
		return structpb.NewStringValue(s)
	}
	b.strs = append(b.strs, structpb.Value_StringValue{StringValue: s})
	b.vals = b.vals[:len(b.vals)+1]
	v := &b.vals[len(b.vals)-1]
	v.Kind = &b.strs[len(b.strs)-1]
	return v
}

func overwrite(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// headerValues hands out header options from two preallocated slices (two allocations per
// response instead of two per header).
type headerValues struct {
	opts []corev3.HeaderValueOption
	vals []corev3.HeaderValue
}

func newHeaderValues(n int) *headerValues {
	return &headerValues{opts: make([]corev3.HeaderValueOption, 0, n), vals: make([]corev3.HeaderValue, 0, n)}
}

func (h *headerValues) overwrite(k, v string) *corev3.HeaderValueOption {
	if len(h.opts) == cap(h.opts) {
		return overwrite(k, v)
	}
	h.vals = append(h.vals, corev3.HeaderValue{Key: k, Value: v})
	h.opts = h.opts[:len(h.opts)+1]
	o := &h.opts[len(h.opts)-1]
	o.Header = &h.vals[len(h.vals)-1]
	o.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	return o
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// internalDeny is the answer when even the pipeline's own failure handling failed.
func internalDeny() *authv3.CheckResponse {
	id := pipeline.NewID(time.Now())
	body := `{"decision_id":"` + id + `","reasons":[{"code":"pipeline.internal","message":"internal error"}]}`
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.Unavailable), Message: pipeline.ReasonInternal},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
			Headers: []*corev3.HeaderValueOption{overwrite("content-type", "application/json"), overwrite(pipeline.HeaderDecisionID, id)},
			Body:    body,
		}},
	}
}
