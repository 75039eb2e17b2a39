package admin

import (
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// TestAdminRefusesSeveralAuthorizationHeaders: the authenticators read the first
// Authorization header; with a valid admin token first and anything after it, the request
// would act as the admin for one reader and as someone else for another (a proxy reading the
// last). More than one is a 401, whichever comes first.
func TestAdminRefusesSeveralAuthorizationHeaders(t *testing.T) {
	s := New(Config{Token: "admin-secret"}, prometheus.NewRegistry())
	// Stands in for the admin-role JWT check (sidecar/app adminJWT), which reads c.Get too.
	s.AddAuthenticator(func(c *fiber.Ctx) (string, bool) {
		return "emp-1", c.Get(fiber.HeaderAuthorization) == "Bearer jwt-of-an-admin"
	})
	s.API().Get("/whoami", func(c *fiber.Ctx) error { return c.SendString(Actor(c)) })
	for name, c := range map[string]struct {
		auth []string
		want int
	}{
		"admin token":             {[]string{"Bearer admin-secret"}, 200},
		"admin JWT":               {[]string{"Bearer jwt-of-an-admin"}, 200},
		"token, then another":     {[]string{"Bearer admin-secret", "Bearer someone-else"}, 401},
		"another, then the token": {[]string{"Bearer someone-else", "Bearer admin-secret"}, 401},
		"admin JWT, then another": {[]string{"Bearer jwt-of-an-admin", "Basic eDp5"}, 401},
		"the same token twice":    {[]string{"Bearer admin-secret", "Bearer admin-secret"}, 401},
		"none":                    {nil, 401},
	} {
		req := httptest.NewRequest("GET", "/v1/whoami", nil)
		for _, a := range c.auth {
			req.Header.Add("Authorization", a)
		}
		resp, err := s.App().Test(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", name, resp.StatusCode, c.want)
		}
	}
}
