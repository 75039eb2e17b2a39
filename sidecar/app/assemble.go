package app

import "context"

// assemble builds the optional capabilities named in the configuration (front doors, state,
// decision log, Vault). Each is wired here and nowhere else.
func (a *App) assemble(ctx context.Context) error {
	_ = ctx
	return nil
}
