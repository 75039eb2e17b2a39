package engine

import (
	"bytes"
	"encoding/json"
)

// jsonUnmarshal decodes numbers as json.Number, as OPA does, so large integers survive.
func jsonUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return dec.Decode(v)
}
