package envoy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sort"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/sidecar/transform"
)

// ExtProcFrontDoor is the pipeline's name for the ext_proc door.
const ExtProcFrontDoor = "ext_proc"

// Reason codes the ext_proc door adds.
const (
	ReasonBodyNotBuffered = "ext_proc.body_not_buffered"
	ReasonExtProcInternal = "ext_proc.internal"
)

// ExtProc implements envoy.service.ext_proc.v3.ExternalProcessor: request headers (and the
// buffered request body, when one comes) get the pipeline's decision, a deny becomes an immediate
// response; response bodies (buffered) pass the shared transformer, like the HTTP proxy's.
type ExtProc struct {
	extprocv3.UnimplementedExternalProcessorServer
	p   *pipeline.Pipeline
	t   *transform.Transformer
	log *slog.Logger
}

var _ extprocv3.ExternalProcessorServer = (*ExtProc)(nil)

// NewExtProc builds the ext_proc service over the shared pipeline and transformer.
func NewExtProc(p *pipeline.Pipeline, t *transform.Transformer, log *slog.Logger) *ExtProc {
	if log == nil {
		log = slog.Default()
	}
	return &ExtProc{p: p, t: t, log: log}
}

// Register adds the service to a gRPC server (the ext_authz server's GRPC()).
func (x *ExtProc) Register(s *grpc.Server) { extprocv3.RegisterExternalProcessorServer(s, x) }

// exchange is the state of one HTTP request's stream.
type exchange struct {
	req      *pipeline.Request
	out      *pipeline.Outcome
	reqBody  []byte
	respBody []byte
	status   int
	ctype    string
	cenc     string
	crange   string
	// writeEnf is what encrypting the write released (key scopes, fields): the CRM has the
	// ciphertext whatever it answers, so every record of the outcome names it (record).
	writeEnf  audit.Enforcement
	protocol  *extprocv3.ProtocolConfiguration
	awaitBody bool // decision waits for the request body
	// respAwait: the response headers were answered and the buffered response body is due;
	// respDone: it was transformed and answered; respSettled: the response was settled (and
	// recorded) on its headers, its route needing no body.
	respAwait, respDone, respSettled bool
}

// Process serves one stream (one HTTP request). It never ends a stream with an error for a
// policy reason: denials are immediate responses, internal failures 503 immediate responses.
func (x *ExtProc) Process(stream extprocv3.ExternalProcessor_ProcessServer) (err error) {
	ctx := stream.Context()
	ex := &exchange{}
	observed := false
	defer func() {
		if r := recover(); r != nil {
			x.log.Error("ext_proc panic", "panic", r, "stack", string(debug.Stack()))
			err = stream.Send(immediate(http.StatusServiceUnavailable, "", ReasonExtProcInternal, transform.DenyBody("", ReasonExtProcInternal, "internal error"), nil))
		}
		x.recordEnded(ctx, ex)
	}()
	for {
		msg, rerr := stream.Recv()
		if errors.Is(rerr, io.EOF) {
			return nil
		}
		if rerr != nil {
			return rerr
		}
		if pc := msg.GetProtocolConfig(); pc != nil {
			ex.protocol = pc
		}
		if msg.GetObservabilityMode() && !observed {
			// Envoy ignores every answer in observability mode: nothing consentry decides is
			// enforced. Only Envoy's configuration can fix that; say so loudly.
			observed = true
			x.log.Error("ext_proc: Envoy runs this filter in observability_mode; consentry's decisions are ignored and nothing is enforced (see docs/front-doors.md)")
		}
		resp := x.handle(ctx, ex, msg)
		if resp == nil {
			continue
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if resp.GetImmediateResponse() != nil {
			return nil
		}
	}
}

func (x *ExtProc) handle(ctx context.Context, ex *exchange, msg *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch r := msg.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return x.requestHeaders(ctx, ex, msg, r.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		ex.reqBody = append(ex.reqBody, r.RequestBody.GetBody()...)
		if ex.out == nil {
			// Nothing may pass before a decision. In BUFFERED mode Envoy sends the whole body
			// in one message, with end_of_stream false when trailers follow: decide on it.
			return x.requestBody(ctx, ex)
		}
		if !r.RequestBody.GetEndOfStream() {
			if writeRoute(ex.out.Match) {
				// A write is never decided on its headers when a body follows; should its
				// body stream anyway, no chunk passes unchecked and unencrypted.
				return undecided("a write body streamed after a decision on headers")
			}
			return bodyContinue(true, nil, nil) // decided on headers: a read's body streams through
		}
		return x.requestBody(ctx, ex)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		if ex.out == nil {
			return undecided("request trailers before a decision")
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return x.responseHeaders(ctx, ex, r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		switch {
		case ex.respAwait:
			// BUFFERED (the only mode responseHeaders waits for): the whole body comes in one
			// message, with end_of_stream false when trailers follow.
			ex.respAwait, ex.respDone = false, true
			ex.respBody = r.ResponseBody.GetBody()
			return x.responseBody(ctx, ex)
		case ex.respSettled:
			// The response was settled on its headers (the route needs no body): it passes.
			return bodyContinue(false, nil, nil)
		case ex.respDone:
			// More body after the enforced one: none of it was seen, none of it passes.
			return clearBody()
		}
		return undecided("response body before its headers were answered")
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		// A digest or checksum of the unminimized body may come as a trailer too.
		tr := &extprocv3.TrailersResponse{}
		if transform.NeedsBody(ex.out) {
			if remove := bodyDerived(r.ResponseTrailers.GetTrailers()); remove != nil {
				tr.HeaderMutation = &extprocv3.HeaderMutation{RemoveHeaders: remove}
			}
		}
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: tr}}
	}
	return nil
}

func (x *ExtProc) requestHeaders(ctx context.Context, ex *exchange, msg *extprocv3.ProcessingRequest, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if ex.req != nil {
		// One stream carries one HTTP request: Envoy never sends a second request's headers
		// on it. Should some client do so, the first request's outcome (perhaps forwarded to
		// the CRM) is recorded, not overwritten, and the second is refused undecided: no
		// decision goes unlogged.
		x.recordEnded(ctx, ex)
		return undecided("a second request on one stream")
	}
	ex.req = requestFromHeaders(h, msg.GetAttributes())
	if h.GetEndOfStream() {
		// No body coming: the request is decided on its headers (a write carries no field).
		ex.req.BodyComplete = true
		return x.decide(ctx, ex, x.p.Check(ctx, ex.req), true)
	}
	if ex.protocol.GetRequestBodyMode() == extprocfilterv3.ProcessingMode_BUFFERED {
		// A write is decided on its whole body, whatever the method, as the proxy does: a
		// route map may declare a write on any method (OData's MERGE), a support agent may
		// correct an e-mail without being allowed to write card numbers, and the body must be
		// encrypted before the CRM. Anything else is decided on its headers now (its body
		// changes nothing in the decision): Envoy sends no body message for a request that
		// carries none after headers without end_of_stream (HTTP/2 HEADERS, then trailers
		// only), and continues it to the CRM after a bare CONTINUE - undecided and unlogged.
		// Writes need request_trailer_mode: SEND for that case (docs/front-doors.md).
		if !writeRoute(x.p.Route(ex.req.Method, ex.req.Target)) {
			return x.decide(ctx, ex, x.p.Check(ctx, ex.req), true)
		}
		ex.awaitBody = true
		return headersContinue(true, nil)
	}
	// The body would reach the CRM in chunks consentry never holds whole (without
	// protocol_config, Envoy before 1.34, the mode is unknown: counted as not buffered).
	// A lower-case "patch" is refused as well (the pipeline would refuse it as
	// request.method_invalid): nothing of its body passes either way.
	method := strings.ToUpper(ex.req.Method)
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		return x.bodyNotBuffered(ex.protocol)
	}
	// Other methods: whether the request is a write follows its route's action (the
	// pipeline's route match, nothing decided yet); a write route is refused all the same,
	// since its body would pass unseen. Anything else is decided on its headers.
	if writeRoute(x.p.Route(ex.req.Method, ex.req.Target)) {
		return x.bodyNotBuffered(ex.protocol)
	}
	return x.decide(ctx, ex, x.p.Check(ctx, ex.req), true)
}

// bodyNotBuffered refuses a write whose body Envoy does not buffer to consentry: streamed
// chunks (or, with NONE, the whole body) would reach the CRM before it is checked and
// encrypted. Nothing was decided, so nothing is recorded.
func (x *ExtProc) bodyNotBuffered(pc *extprocv3.ProtocolConfiguration) *extprocv3.ProcessingResponse {
	x.log.Error("ext_proc: request body mode is not BUFFERED; writes are refused (see docs/front-doors.md)", "mode", bodyModeName(pc, true))
	return immediate(http.StatusServiceUnavailable, "", ReasonBodyNotBuffered,
		transform.DenyBody("", ReasonBodyNotBuffered, "writes need processing_mode.request_body_mode: BUFFERED"), nil)
}

// writeRoute reports whether m is a route whose body is a create or update the write
// transformer checks and encrypts (transform.IsWrite): the action, not the method, makes a
// write.
func writeRoute(m *routes.Match) bool {
	if m == nil || m.Route.Public {
		return false
	}
	r := m.Route
	return (r.Action == input.ActionCreate || r.Action == input.ActionUpdate) && r.Body == routes.BodyJSON
}

func (x *ExtProc) requestBody(ctx context.Context, ex *exchange) *extprocv3.ProcessingResponse {
	if ex.req == nil {
		return immediate(http.StatusBadRequest, "", ReasonExtProcInternal, transform.DenyBody("", ReasonExtProcInternal, "request body before headers"), nil)
	}
	if ex.out != nil {
		return x.writeBody(ctx, ex) // decided on headers (no protocol config): encrypt now
	}
	ex.req.Body, ex.req.BodyComplete = ex.reqBody, true
	return x.decide(ctx, ex, x.p.Check(ctx, ex.req), false)
}

// undecided answers a message that must not arrive before a decision with a 503: Envoy then
// stops the request (failure_mode_allow: false), so nothing reaches the CRM undecided.
func undecided(why string) *extprocv3.ProcessingResponse {
	return immediate(http.StatusServiceUnavailable, "", ReasonExtProcInternal, transform.DenyBody("", ReasonExtProcInternal, why), nil)
}

// decide settles the pipeline's outcome; the answer is for the headers phase (onHeaders) or
// the body phase.
func (x *ExtProc) decide(ctx context.Context, ex *exchange, out *pipeline.Outcome, onHeaders bool) *extprocv3.ProcessingResponse {
	ex.awaitBody = false
	ex.out = out
	// Envoy forwards the raw :path, not the decided one: only its canonical spelling passes.
	refuseNonCanonical(ex.out, ex.req.Target)
	if !ex.out.Allowed() {
		return x.deny(ctx, ex)
	}
	if transform.NeedsBody(ex.out) && ex.protocol != nil && ex.protocol.GetResponseBodyMode() != extprocfilterv3.ProcessingMode_BUFFERED {
		// Envoy says it will not buffer the response body: the response could not be
		// minimized, and with response_header_mode SKIP consentry would never see it at all.
		// Refuse before the CRM runs the request. (Without protocol_config the mode is
		// unknown; responseHeaders refuses then.)
		x.log.Error("ext_proc: response body mode is not BUFFERED; requests whose responses need minimizing are refused (see docs/front-doors.md)", "mode", bodyModeName(ex.protocol, false))
		_ = x.record(ctx, ex, audit.Enforcement{Status: http.StatusBadGateway})
		return immediate(http.StatusBadGateway, ex.out.DecisionID, ReasonBodyNotBuffered,
			transform.DenyBody(ex.out.DecisionID, ReasonBodyNotBuffered, "the response body is not buffered to consentry"), nil)
	}
	if !onHeaders {
		return x.writeBody(ctx, ex)
	}
	return x.release(ctx, ex, headersContinue(true, x.upstreamMutation(ex)))
}

// release returns resp, the answer that lets the request go on to the CRM, once the
// write-ahead entry of a request that may change the CRM's state is in the log (the
// pipeline writes it once per request); if it cannot be written, a 503 deny instead.
func (x *ExtProc) release(ctx context.Context, ex *exchange, resp *extprocv3.ProcessingResponse) *extprocv3.ProcessingResponse {
	if err := x.p.RecordIntent(ctx, ex.out, ex.writeEnf); err != nil {
		return x.deny(ctx, ex)
	}
	return resp
}

// writeBody checks and encrypts a write body, answering the request body phase.
func (x *ExtProc) writeBody(ctx context.Context, ex *exchange) *extprocv3.ProcessingResponse {
	mut := x.upstreamMutation(ex)
	if !transform.IsWrite(ex.out) {
		return x.release(ctx, ex, bodyContinue(true, mut, nil))
	}
	w := x.t.Request(ctx, ex.out, ex.reqBody)
	if w.Status != 0 {
		if err := x.record(ctx, ex, w.Enforcement); err != nil {
			return x.deny(ctx, ex)
		}
		return immediate(w.Status, ex.out.DecisionID, w.Codes[0], w.DenyBody, ex.out.ResponseHeaders)
	}
	ex.writeEnf = w.Enforcement
	mut.RemoveHeaders = append(mut.RemoveHeaders, "content-length")
	return x.release(ctx, ex, bodyContinue(true, mut, w.Body))
}

// deny records the denied outcome and answers with it. An outcome already recorded (a
// decision log failure turned it into a 503 deny) is not recorded again.
func (x *ExtProc) deny(ctx context.Context, ex *exchange) *extprocv3.ProcessingResponse {
	_ = x.record(ctx, ex, audit.Enforcement{Status: ex.out.Status})
	code := ""
	if ex.out.Decision != nil && len(ex.out.Decision.Reasons) > 0 {
		code = ex.out.Decision.Reasons[0].Code
	}
	return immediate(ex.out.Status, ex.out.DecisionID, code, ex.out.Body, ex.out.ResponseHeaders)
}

// upstreamMutation sets consentry's headers and removes caller-supplied reserved ones. When
// the response will be transformed it also removes what would make the CRM answer with less
// than the whole record (a range, or on reads a validator to compare) and asks for an
// identity encoding: the proxy's rules. A gzip or br answer cannot be minimized (the
// transformer refuses it, 502 response.encoded), so a caller's Accept-Encoding would make
// every compressing CRM's answer a 502.
func (x *ExtProc) upstreamMutation(ex *exchange) *extprocv3.HeaderMutation {
	m := &extprocv3.HeaderMutation{SetHeaders: setHeaders(ex.out.UpstreamHeaders), RemoveHeaders: append([]string(nil), ex.out.RemoveHeaders...)}
	if transform.NeedsBody(ex.out) {
		m.SetHeaders = append(m.SetHeaders, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "accept-encoding", RawValue: []byte("identity")},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
		method := strings.ToUpper(ex.req.Method)
		read := method == http.MethodGet || method == http.MethodHead
		for k := range ex.req.Headers {
			if normalize.HeaderIn(k, transform.RangeHeaders) || read && normalize.HeaderIn(k, transform.ReadConditionalHeaders) {
				m.RemoveHeaders = append(m.RemoveHeaders, k)
			}
		}
		sort.Strings(m.RemoveHeaders)
	}
	return m
}

// requestFromHeaders converts ext_proc request headers (pseudo-headers included) into the
// pipeline's request. Every value of a repeated header is kept.
func requestFromHeaders(h *extprocv3.HttpHeaders, attrs map[string]*structpb.Struct) *pipeline.Request {
	req := &pipeline.Request{FrontDoor: ExtProcFrontDoor, Headers: map[string][]string{},
		CanFulfil: []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}}
	for _, hv := range h.GetHeaders().GetHeaders() {
		k, v := strings.ToLower(hv.GetKey()), headerValue(hv)
		switch k {
		case ":method":
			req.Method = v
		case ":path":
			req.Target = v
		case ":authority":
			req.Host = v
		default:
			if strings.HasPrefix(k, ":") {
				continue
			}
			req.Headers[k] = append(req.Headers[k], v)
		}
	}
	if v := req.Headers["x-request-id"]; len(v) == 1 {
		req.ID = v[0]
	}
	req.Source = sourceFromAttributes(attrs)
	return req
}

// sourceFromAttributes reads Envoy's connection attributes (request_attributes:
// source.address, connection.mtls, connection.uri_san_peer_certificate). The principal is
// taken only when Envoy says the connection was mutual TLS.
func sourceFromAttributes(attrs map[string]*structpb.Struct) input.Source {
	var src input.Source
	for _, s := range attrs {
		f := s.GetFields()
		if v, ok := f["source.address"]; ok {
			src.Address = v.GetStringValue()
		}
		// The first URI SAN (Envoy gives no other): taken only when it is a SPIFFE id, as
		// ext_authz takes source.principal when no certificate is forwarded.
		if p := f["connection.uri_san_peer_certificate"].GetStringValue(); f["connection.mtls"].GetBoolValue() && strings.HasPrefix(p, "spiffe://") {
			src.Principal = p
		}
	}
	return src
}

func headerValue(hv *corev3.HeaderValue) string {
	if len(hv.GetRawValue()) > 0 {
		return string(hv.GetRawValue())
	}
	return hv.GetValue()
}

func setHeaders(m map[string]string) []*corev3.HeaderValueOption {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*corev3.HeaderValueOption, 0, len(keys))
	for _, k := range keys {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(m[k])},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	return out
}

func headersContinue(request bool, mut *extprocv3.HeaderMutation) *extprocv3.ProcessingResponse {
	hr := &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{HeaderMutation: mut}}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: hr}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}}
}

func bodyContinue(request bool, mut *extprocv3.HeaderMutation, body []byte) *extprocv3.ProcessingResponse {
	cr := &extprocv3.CommonResponse{HeaderMutation: mut}
	if body != nil {
		cr.BodyMutation = &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: body}}
	}
	br := &extprocv3.BodyResponse{Response: cr}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}}
}

// bodyModeName names Envoy's body mode for a log line.
func bodyModeName(pc *extprocv3.ProtocolConfiguration, request bool) string {
	switch {
	case pc == nil:
		return "unknown (Envoy sent no protocol_config; Envoy 1.34 and later send it)"
	case request:
		return pc.GetRequestBodyMode().String()
	}
	return pc.GetResponseBodyMode().String()
}

func immediate(status int, decisionID, code string, body []byte, headers map[string]string) *extprocv3.ProcessingResponse {
	h := map[string]string{"content-type": "application/json"}
	for k, v := range headers {
		h[k] = v
	}
	if decisionID != "" {
		h[pipeline.HeaderDecisionID] = decisionID
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: setHeaders(h)},
		Body:    body,
		Details: code,
	}}}
}
