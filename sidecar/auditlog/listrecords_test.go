package auditlog

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/input"
)

// fill sets every string in v (recursively: struct fields, pointers, slices of one element)
// to s and every time to t.
func fill(v reflect.Value, s string, t time.Time) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Pointer:
		if v.Type().Elem() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(&t))
			return
		}
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), s, t)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), s, t)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(t))
			return
		}
		for i := range v.NumField() {
			fill(v.Field(i), s, t)
		}
	}
}

// TestPseudonymizeEnrichmentCoversEveryString: a list record's state is pseudonymized field
// by field (listrecords.go), so a string field added to input.Enrichment must be added there
// too, or the customer's raw id would reach the log.
func TestPseudonymizeEnrichmentCoversEveryString(t *testing.T) {
	var e input.Enrichment
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	fill(reflect.ValueOf(&e).Elem(), "about c-7 here", at)
	orig, _ := json.Marshal(e)
	got, _ := json.Marshal(pseudonymizeEnrichment(e, idSet{{"c-7", "cp_7"}}))
	if strings.Contains(string(got), "c-7") || strings.Count(string(got), "about cp_7 here") != strings.Count(string(orig), "about c-7 here") {
		t.Fatalf("not every string pseudonymized:\n%s\n%s", orig, got)
	}
	if strings.Count(string(got), "2026-03-02T10:00:00Z") != strings.Count(string(orig), "2026-03-02T10:00:00Z") {
		t.Fatalf("times changed:\n%s\n%s", orig, got)
	}
	// The input is not modified (it is the pipeline's).
	if again, _ := json.Marshal(e); string(again) != string(orig) {
		t.Fatalf("input modified")
	}
}
