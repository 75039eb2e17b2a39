package envoy

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/transform"
)

// Reason codes of an error answer that is no record (Envoy's own local replies: upstream
// timeout, no healthy upstream, connection reset), as the HTTP proxy names its upstream
// failures.
const (
	ReasonUpstreamTimeout = transform.ReasonUpstreamTimeout
	ReasonUpstreamDown    = transform.ReasonUpstreamDown
	ReasonUpstreamError   = transform.ReasonUpstreamError
)

// reservedResponsePrefix is the namespace of the headers consentry sets on responses: the
// CRM cannot speak for consentry (the HTTP proxy drops them too).
const reservedResponsePrefix = "x-consentry-"

func (x *ExtProc) responseHeaders(ctx context.Context, ex *exchange, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	if ex.out == nil {
		// No decision before the CRM answered: Envoy did not send the request (or its body)
		// to consentry. The CRM already had the request; its answer is withheld.
		x.log.Error("ext_proc: the CRM answered a request consentry never decided; check processing_mode (request_header_mode SEND, request_body_mode BUFFERED; see docs/front-doors.md)")
		return immediate(http.StatusServiceUnavailable, "", ReasonBodyNotBuffered, transform.DenyBody("", ReasonBodyNotBuffered, "no decision for this request"), nil)
	}
	for _, hv := range h.GetHeaders().GetHeaders() {
		v := headerValue(hv)
		switch strings.ToLower(hv.GetKey()) {
		case ":status":
			ex.status, _ = strconv.Atoi(v)
		case "content-type":
			ex.ctype = v
		case "content-encoding":
			ex.cenc = v
		case "content-range":
			ex.crange = v
		}
	}
	mut := &extprocv3.HeaderMutation{SetHeaders: setHeaders(ex.out.ResponseHeaders)}
	mut.RemoveHeaders = x.reservedFromCRM(h.GetHeaders(), ex.out.ResponseHeaders)
	if transform.NeedsBody(ex.out) {
		// Removed whether a body follows or not (a HEAD carries them too).
		for _, k := range bodyDerived(h.GetHeaders()) {
			if !slices.Contains(mut.RemoveHeaders, k) {
				mut.RemoveHeaders = append(mut.RemoveHeaders, k)
			}
		}
	}
	if h.GetEndOfStream() || !transform.NeedsBody(ex.out) {
		ex.respSettled = true
		return x.finish(ctx, ex, headersContinue(false, mut), audit.Enforcement{Status: ex.status})
	}
	if ex.protocol == nil || ex.protocol.GetResponseBodyMode() != extprocfilterv3.ProcessingMode_BUFFERED {
		// A response consentry cannot see cannot be minimized: never pass it (without
		// protocol_config the mode is unknown, and NONE would pass the body unseen).
		x.log.Error("ext_proc: response body mode is not BUFFERED; responses that need minimizing are refused (see docs/front-doors.md)", "mode", bodyModeName(ex.protocol, false))
		_ = x.record(ctx, ex, audit.Enforcement{Status: http.StatusBadGateway})
		return immediate(http.StatusBadGateway, ex.out.DecisionID, ReasonBodyNotBuffered,
			transform.DenyBody(ex.out.DecisionID, ReasonBodyNotBuffered, "the response body is not buffered to consentry"), nil)
	}
	if !slices.Contains(mut.RemoveHeaders, "content-length") {
		mut.RemoveHeaders = append(mut.RemoveHeaders, "content-length") // the body will change
	}
	ex.respAwait = true
	return headersContinue(false, mut)
}

// reservedFromCRM names the CRM's response headers in consentry's namespace (x-consentry-*,
// '_' counted as '-', and the configured reserved prefix), once each, on every route: only
// consentry speaks for consentry. The names consentry sets in the same mutation are left to
// the set (it overwrites), whatever order Envoy applies removals and sets in.
func (x *ExtProc) reservedFromCRM(hm *corev3.HeaderMap, own map[string]string) []string {
	var out []string
	cfg := x.p.Config().Headers
	for _, hv := range hm.GetHeaders() {
		k := strings.ToLower(hv.GetKey())
		if !normalize.HasHeaderPrefix(k, reservedResponsePrefix) && !cfg.Reserved(k) {
			continue
		}
		if _, set := own[k]; !set && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

func (x *ExtProc) responseBody(ctx context.Context, ex *exchange) *extprocv3.ProcessingResponse {
	if ex.out == nil {
		return immediate(http.StatusServiceUnavailable, "", ReasonExtProcInternal, transform.DenyBody("", ReasonExtProcInternal, "response before a decision"), nil)
	}
	res := x.t.Response(ctx, x.p, ex.out, transform.Response{Status: ex.status, ContentType: ex.ctype, ContentEncoding: ex.cenc, ContentRange: ex.crange, Body: ex.respBody})
	if res.Replaced || res.Status != ex.status {
		// The transformer refused the response (fail closed): replace it entirely.
		status, code, body := res.Status, "", res.Body
		if c, msg := localReply(ex.status, res.Body); c != "" {
			// An error answer that is not JSON on a JSON route is no record: Envoy's own
			// local reply (504 upstream timeout, 503 no healthy upstream) or the CRM's error
			// page. The caller learns what happened, with its status, as behind the proxy.
			status, code, body = ex.status, c, transform.DenyBody(ex.out.DecisionID, c, msg)
		}
		if err := x.record(ctx, ex, audit.Enforcement{Status: status}); err != nil {
			return x.deny(ctx, ex)
		}
		return immediate(status, ex.out.DecisionID, code, body, nil)
	}
	mut := &extprocv3.HeaderMutation{SetHeaders: setHeaders(res.Headers)}
	var body []byte
	if res.Changed {
		body = res.Body
	}
	return x.finish(ctx, ex, bodyContinue(false, mut, body), res.Enforcement)
}

// localReply maps an error status (4xx, 5xx) whose body the transformer refused as not JSON
// (denyBody's first reason is response.not_json) to the reason the HTTP proxy gives the same
// failure: 504 (and 408) upstream.timeout, 502 and 503 upstream.unavailable, any other
// upstream.error. It returns no code for anything else.
func localReply(status int, denyBody []byte) (code, msg string) {
	if status < 400 || status > 599 {
		return "", ""
	}
	var doc struct {
		Reasons []struct {
			Code string `json:"code"`
		} `json:"reasons"`
	}
	if json.Unmarshal(denyBody, &doc) != nil || len(doc.Reasons) == 0 || doc.Reasons[0].Code != transform.ReasonNotJSON {
		return "", ""
	}
	switch status {
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		return ReasonUpstreamTimeout, "the CRM did not answer in time"
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return ReasonUpstreamDown, "the CRM could not be reached"
	}
	return ReasonUpstreamError, "the CRM answered with an error"
}

// finish records the enforcement before the response is released (no durable record, no
// response) and returns resp, or a 503 deny when the log cannot store it.
func (x *ExtProc) finish(ctx context.Context, ex *exchange, resp *extprocv3.ProcessingResponse, enf audit.Enforcement) *extprocv3.ProcessingResponse {
	if enf.Status == 0 {
		enf.Status = ex.status
	}
	if err := x.record(ctx, ex, enf); err != nil {
		return x.deny(ctx, ex)
	}
	return resp
}

// record writes ex's outcome to the decision log, with what encrypting its write released
// (key scopes, fields) merged in, as the HTTP proxy does: the CRM has the ciphertext whether
// it answers with a body, with none (204), or the stream ends first. Pipeline.Record records
// an outcome once; later calls return nil.
// recordEnded records the outcome of a request whose stream ends (client gone, Envoy reset, a
// second request on it) before its response was settled, with the keys a write it forwarded
// was encrypted with and the CRM's status if its headers came through; an outcome already
// recorded is not again (Pipeline.Record records an outcome once). A request that reached the
// CRM under a write-ahead intent and whose answer never came back is not recorded: what the
// CRM did is unknown, and a decision record would claim the policy's status for it and resolve
// the intent. The intent stays unresolved, and audit verify and query show it so.
func (x *ExtProc) recordEnded(ctx context.Context, ex *exchange) {
	if ex.out == nil {
		return
	}
	if ex.status == 0 && ex.out.Intended() {
		x.log.Warn("ext_proc: the stream ended before the CRM's answer to a forwarded write; its outcome stays unrecorded (an unresolved intent)",
			"decision_id", ex.out.DecisionID)
		return
	}
	_ = x.record(ctx, ex, audit.Enforcement{Status: ex.status})
}

func (x *ExtProc) record(ctx context.Context, ex *exchange, enf audit.Enforcement) error {
	if ex.out == nil {
		return nil
	}
	enf.AddWrite(ex.writeEnf)
	return x.p.Record(ctx, ex.out, enf)
}

// bodyDerived names the headers (or trailers) of hm that describe the CRM's record before
// minimization (transform.BodyDerivedHeaders: length, range, validators, digests), once each.
func bodyDerived(hm *corev3.HeaderMap) []string {
	var out []string
	for _, hv := range hm.GetHeaders() {
		if k := strings.ToLower(hv.GetKey()); normalize.HeaderIn(k, transform.BodyDerivedHeaders) && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// clearBody answers a body message by removing its bytes.
func clearBody() *extprocv3.ProcessingResponse {
	cr := &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: cr}}}
}
