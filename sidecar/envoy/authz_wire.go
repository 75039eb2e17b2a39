package envoy

import (
	"math"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/consentry/consentry/sidecar/pipeline"
)

// The ext_authz handler carries the dynamic metadata as its protobuf encoding (field 4 of
// CheckResponse, a google.protobuf.Struct) in the response's unknown fields instead of as a
// structpb tree. On the wire it is the same field with the same content - Envoy, and any gRPC
// client, decode it as dynamic_metadata - but building the tree and having gRPC size and
// marshal its maps cost more than the rest of the answer. ResponseFromOutcome keeps the
// structured form for in-process callers; TestWireResponseDecodesLikeStructured holds the
// two equal after a marshal round trip.

// Field numbers: CheckResponse.dynamic_metadata; google.protobuf.Struct, its map entries,
// Value and ListValue.
const (
	checkResponseMetadata protowire.Number = 4
	structFields          protowire.Number = 1
	entryKey              protowire.Number = 1
	entryValue            protowire.Number = 2
	valueNumber           protowire.Number = 2
	valueString           protowire.Number = 3
	valueBool             protowire.Number = 4
	valueStruct           protowire.Number = 5
	valueList             protowire.Number = 6
	listValues            protowire.Number = 1
)

// wireResponse is ResponseFromOutcome with the dynamic metadata pre-encoded.
func wireResponse(out *pipeline.Outcome) *authv3.CheckResponse {
	resp := responseFromOutcome(out, false)
	resp.ProtoReflect().SetUnknown(protoreflect.RawFields(appendMetadataField(make([]byte, 0, 1024), out)))
	return resp
}

// pw appends protobuf wire data; nested messages are written in place and their length
// inserted when they close.
type pw struct {
	b  []byte
	ok bool // false once a string is not valid UTF-8 (protobuf strings must be)
}

func (w *pw) open(n protowire.Number) int {
	w.b = protowire.AppendTag(w.b, n, protowire.BytesType)
	return len(w.b)
}

// close prefixes the bytes written since open with their length.
func (w *pw) close(start int) {
	n := len(w.b) - start
	size := protowire.SizeVarint(uint64(n))
	w.b = append(w.b, make([]byte, size)...)
	copy(w.b[start+size:], w.b[start:start+n])
	protowire.AppendVarint(w.b[start:start], uint64(n))
}

func (w *pw) str(n protowire.Number, s string) {
	if !utf8.ValidString(s) {
		w.ok = false
	}
	w.b = protowire.AppendTag(w.b, n, protowire.BytesType)
	w.b = protowire.AppendString(w.b, s)
}

// entry opens a Struct entry with key k and its Value; done closes both.
func (w *pw) entry(k string) (int, int) {
	e := w.open(structFields)
	w.str(entryKey, k)
	return e, w.open(entryValue)
}

func (w *pw) done(e, v int) {
	w.close(v)
	w.close(e)
}

func (w *pw) stringEntry(k, v string) {
	if !utf8.ValidString(k) || !utf8.ValidString(v) {
		w.ok = false
	}
	// Sizes are known: no nested length to insert afterwards.
	val := protowire.SizeTag(valueString) + protowire.SizeBytes(len(v))
	ent := protowire.SizeTag(entryKey) + protowire.SizeBytes(len(k)) + protowire.SizeTag(entryValue) + protowire.SizeBytes(val)
	w.b = protowire.AppendTag(w.b, structFields, protowire.BytesType)
	w.b = protowire.AppendVarint(w.b, uint64(ent))
	w.b = protowire.AppendTag(w.b, entryKey, protowire.BytesType)
	w.b = protowire.AppendString(w.b, k)
	w.b = protowire.AppendTag(w.b, entryValue, protowire.BytesType)
	w.b = protowire.AppendVarint(w.b, uint64(val))
	w.b = protowire.AppendTag(w.b, valueString, protowire.BytesType)
	w.b = protowire.AppendString(w.b, v)
}

func (w *pw) boolEntry(k string, v bool) {
	e, val := w.entry(k)
	w.b = protowire.AppendTag(w.b, valueBool, protowire.VarintType)
	w.b = protowire.AppendVarint(w.b, protowire.EncodeBool(v))
	w.done(e, val)
}

func (w *pw) numberEntry(k string, f float64) {
	e, val := w.entry(k)
	w.b = protowire.AppendTag(w.b, valueNumber, protowire.Fixed64Type)
	w.b = protowire.AppendFixed64(w.b, math.Float64bits(f))
	w.done(e, val)
}

func (w *pw) listEntry(k string, n int, item func(i int) string) {
	e, val := w.entry(k)
	l := w.open(valueList)
	for i := 0; i < n; i++ {
		v := w.open(listValues)
		w.str(valueString, item(i))
		w.close(v)
	}
	w.close(l)
	w.done(e, val)
}

// appendMetadataField appends CheckResponse field 4 with the Struct metadata() builds.
func appendMetadataField(b []byte, out *pipeline.Outcome) []byte {
	d := out.Decision
	w := pw{b: b, ok: true}
	f := w.open(checkResponseMetadata)
	w.stringEntry("decision_id", out.DecisionID)
	w.boolEntry("allow", d.Allow)
	w.numberEntry("status", float64(out.Status))
	w.listEntry("reasons", len(d.Reasons), func(i int) string { return d.Reasons[i].Code })
	e, val := w.entry("fields")
	s := w.open(valueStruct)
	for name, fl := range d.Fields {
		w.stringEntry(name, fl.Outcome)
	}
	w.close(s)
	w.done(e, val)
	w.listEntry("key_scopes", len(d.KeyScopes), func(i int) string { return d.KeyScopes[i] })
	if out.Input != nil {
		w.stringEntry("purpose", out.Input.Purpose)
		w.stringEntry("route", out.Input.Request.Route)
		w.stringEntry("customer_id", out.Input.Resource.CustomerID)
	}
	if out.Revision != "" {
		w.stringEntry("revision", out.Revision)
	}
	if !w.ok {
		// As metadata(): a string protobuf cannot carry reduces it to the decision id.
		w = pw{b: b, ok: true}
		f = w.open(checkResponseMetadata)
		w.stringEntry("decision_id", out.DecisionID)
	}
	w.close(f)
	return w.b
}
