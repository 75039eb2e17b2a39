package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/consentry/consentry/sidecar/admin"
)

// Eraser is what the admin erase endpoint needs (a *Manager).
type Eraser interface {
	Erase(ctx context.Context, customerID, actor, reason string) (*DestructionRecord, error)
}

var _ Eraser = (*Manager)(nil)

// MaxEraseReason bounds the reason (and the admin actor) of an admin erasure, in bytes: the
// state store's erasure request keeps them in full up to the same bound
// (consent.MaxErasureText), so that the sweep's retry of a failed erasure matches the ledger
// record of the first attempt instead of writing a second one.
const MaxEraseReason = 1024

// EraseRequest is the body of POST /v1/customers/:id/erase.
type EraseRequest struct {
	Reason string `json:"reason"`
}

// MountAdmin mounts the crypto-shredding endpoint on the authenticated admin router
// (admin.Server.API(), already under /v1):
//
//	POST /v1/customers/:id/erase  {"reason": "..."}
//
// 200 with the destruction record; 400 without a reason, with a reason longer than
// MaxEraseReason bytes, with a reason or actor that is not valid UTF-8 or holds a NUL
// (invalid.text), or with an invalid id; 502 when Vault
// failed after the erasure was recorded (the ledger has it; run replay-erasures). The actor is
// the authenticated admin (admin.Actor).
func MountAdmin(r fiber.Router, e Eraser) {
	r.Post("/customers/:id/erase", func(c *fiber.Ctx) error {
		var req EraseRequest
		if len(c.Body()) > 0 {
			if err := c.BodyParser(&req); err != nil {
				return c.Status(fiber.StatusBadRequest).JSON(admin.ErrorBody("erase.bad_request", "body must be JSON {\"reason\": \"...\"}"))
			}
		}
		if strings.TrimSpace(req.Reason) == "" {
			return c.Status(fiber.StatusBadRequest).JSON(admin.ErrorBody("erase.reason_required", "a reason is required"))
		}
		if len(req.Reason) > MaxEraseReason {
			return c.Status(fiber.StatusBadRequest).JSON(admin.ErrorBody("erase.reason_too_long",
				fmt.Sprintf("the reason is %d bytes; at most %d", len(req.Reason), MaxEraseReason)))
		}
		actor := admin.Actor(c)
		if actor == "" {
			return c.Status(fiber.StatusUnauthorized).JSON(admin.ErrorBody("admin.unauthenticated", "no admin actor"))
		}
		if len(actor) > MaxEraseReason {
			return c.Status(fiber.StatusBadRequest).JSON(admin.ErrorBody("erase.actor_too_long",
				fmt.Sprintf("the admin actor's name is %d bytes; at most %d", len(actor), MaxEraseReason)))
		}
		// As every other admin write: neither can be stored (PostgreSQL refused the erasure
		// request, and the endpoint answered a retryable 503 that never succeeded).
		for _, f := range []struct{ name, v string }{{"reason", req.Reason}, {"the admin actor's name", actor}} {
			if !utf8.ValidString(f.v) || strings.IndexByte(f.v, 0) >= 0 {
				return c.Status(fiber.StatusBadRequest).JSON(admin.ErrorBody("invalid.text", f.name+" contains a NUL character or invalid UTF-8"))
			}
		}
		rec, err := e.Erase(c.UserContext(), c.Params("id"), actor, req.Reason)
		switch {
		case errors.Is(err, ErrInvalidCustomer):
			return c.Status(fiber.StatusBadRequest).JSON(admin.ErrorBody("erase.invalid_customer", err.Error()))
		case err != nil && rec == nil:
			return c.Status(fiber.StatusServiceUnavailable).JSON(admin.ErrorBody("erase.failed", err.Error()))
		case err != nil:
			return c.Status(fiber.StatusBadGateway).JSON(fiber.Map{
				"error":  fiber.Map{"code": "erase.incomplete", "message": err.Error()},
				"record": rec,
			})
		}
		return c.JSON(fiber.Map{"record": rec})
	})
}
