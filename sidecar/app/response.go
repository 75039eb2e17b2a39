package app

import (
	"context"
	"time"

	"github.com/consentry/consentry/sidecar/envoy"
	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/sidecar/transform"
)

// assembleResponseSide wires the response-side front doors - the HTTP reverse proxy (`proxy:`)
// and Envoy ext_proc (registered on the `envoy:` gRPC listener) - around one response
// transformer, so a policy minimizes, masks, decrypts and filters the same way behind either.
// Without the `vault:` section the transformer has no keys: every field that needs one is
// withheld.
func (a *App) assembleResponseSide(context.Context) error {
	var tc transform.Config
	if _, err := a.Config.Section("transform", &tc); err != nil {
		return err
	}
	var keys transform.Keys
	if a.Keys != nil {
		keys = a.Keys
	}
	tr, err := transform.New(tc, keys, a.Log.With("component", "transform"))
	if err != nil {
		return err
	}
	a.Transform = tr
	var vaultTimeout time.Duration
	if a.Keys != nil {
		vaultTimeout = a.Keys.Config().Timeout
	}
	if a.Envoy != nil {
		envoy.NewExtProc(a.Pipeline, tr, a.Log.With("component", "ext_proc")).Register(a.Envoy.GRPC())
		// How long shutdown waits for a cancelled call: its check, the Vault calls of its
		// transforms and its decision log write (none of which the cancel cuts short).
		pc := a.Pipeline.Config().WithDefaults()
		a.Envoy.SetHandlerBound(pc.Timeout + 2*vaultTimeout + pc.AuditTimeout + time.Second)
	}
	var pc proxy.Config
	ok, err := a.Config.Section("proxy", &pc)
	if err != nil || !ok {
		return err
	}
	px, err := proxy.New(pc, proxy.Deps{Pipeline: a.Pipeline, Transform: tr, Logger: a.Log.With("component", "proxy"), Registerer: a.Registry, VaultTimeout: vaultTimeout})
	if err != nil {
		return err
	}
	a.Proxy = px
	a.Add(px)
	return nil
}
