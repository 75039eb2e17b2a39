package app

import (
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/sidecar/identity"
)

// adminJWT authenticates admin API calls with the same bearer tokens as the front doors
// (identity.issuers): a token whose subject holds one of admin.admin_roles acts as that
// subject, so erasures and state changes name the person who made them. Anything else - no
// token, an invalid one, a subject without an admin role - is not this method's caller.
func adminJWT(id *identity.Authenticator, roles []string) admin.Authenticator {
	return func(c *fiber.Ctx) (string, bool) {
		h := c.Get(fiber.HeaderAuthorization)
		if !strings.HasPrefix(h, "Bearer ") {
			return "", false
		}
		sub, err := id.Authenticate(c.UserContext(), identity.Credentials{Authorization: []string{h}})
		if err != nil || sub.ID == "" || !slices.ContainsFunc(sub.Roles, func(r string) bool { return slices.Contains(roles, r) }) {
			return "", false
		}
		return sub.ID, true
	}
}
