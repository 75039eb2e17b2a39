package admin

import (
	"net/http/httptest"
	"testing"

	"github.com/gofiber/fiber/v2"
)

// TestIsJSON: the media type is parsed; a prefix match took application/jsonx for JSON.
func TestIsJSON(t *testing.T) {
	app := fiber.New()
	app.Post("/", func(c *fiber.Ctx) error {
		if IsJSON(c) {
			return c.SendStatus(fiber.StatusOK)
		}
		return c.SendStatus(fiber.StatusUnsupportedMediaType)
	})
	for ctype, want := range map[string]bool{
		"application/json":                true,
		"APPLICATION/JSON":                true,
		"application/json; charset=utf-8": true,
		"application/jsonx":               false,
		"application/json-seq":            false,
		"application/json-patch+json":     false,
		"application/json; charset":       false,
		"text/json":                       false,
		"":                                false,
	} {
		req := httptest.NewRequest("POST", "/", nil)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := app.Test(req)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.StatusCode == fiber.StatusOK; got != want {
			t.Errorf("Content-Type %q: JSON %v, want %v", ctype, got, want)
		}
	}
}
