package engine

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/consentry/consentry/sidecar/decision"
)

// Error is a coded engine error. Every failure of Decide is one, and each comes with a deny
// decision carrying the same code, so callers never have to invent a fallback.
type Error struct {
	Code   string
	Status int
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Code, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

func codedError(code string, status int, err error) *Error {
	return &Error{Code: code, Status: status, Err: err}
}

// CodeOf returns the reason code of err, or engine.error.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return decision.ReasonEngineError
}

// denyFor turns an engine error into the deny decision the caller returns.
func denyFor(err *Error) *decision.Decision {
	status := err.Status
	if status == 0 {
		status = http.StatusServiceUnavailable
	}
	return decision.Deny(status, err.Code, err.Err.Error())
}

// CompileError is returned by Load when policies do not compile; it lists every error with
// file:line:col so the CLI can print them and exit with its own code.
type CompileError struct{ Errs []string }

func (e *CompileError) Error() string {
	if len(e.Errs) == 1 {
		return "policy does not compile: " + e.Errs[0]
	}
	return fmt.Sprintf("policy does not compile: %d errors:\n  %s", len(e.Errs), joinLines(e.Errs))
}

func joinLines(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += "\n  "
		}
		out += s
	}
	return out
}
