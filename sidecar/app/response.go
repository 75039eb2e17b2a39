package app

import "context"

// assembleResponseSide wires the response-side front doors (HTTP reverse proxy and Envoy
// ext_proc) that share one response transformer. (Filled in with issue 5.)
func (a *App) assembleResponseSide(context.Context) error { return nil }
