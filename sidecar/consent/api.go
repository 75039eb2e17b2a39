package consent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/gofiber/fiber/v2"
)

// Mount registers the state capability on the admin server: the API under /v1, the
// readiness check "state" and the /status section "state".
func (s *Store) Mount(srv *admin.Server) {
	s.MountAPI(srv.API())
	srv.AddReadiness("state", s.Ready)
	srv.AddStatus("state", s.Status)
}

// MountAPI mounts the admin API handlers on r (the authenticated /v1 router; paths below
// are relative to it). See docs/admin-api.md and docs/openapi.yaml.
func (s *Store) MountAPI(r fiber.Router) {
	r.Post("/consents", s.hGrant)
	r.Post("/consents/withdrawals", s.hWithdraw)
	r.Post("/consents/import", s.hImport)
	r.Get("/purposes", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"purposes": s.Purposes()}) })
	r.Get("/customers/:id", s.hCustomer)
	r.Put("/customers/:id", s.hPutCustomer)
	r.Get("/customers/:id/consents/history", s.hHistory)
	r.Get("/cases/:id", s.hCase)
	r.Put("/cases/:id", s.hPutCase)
	r.Get("/agreements/:id", s.hAgreement)
	r.Put("/agreements/:id", s.hPutAgreement)
}

// queryFlag parses a boolean query parameter strictly: absent is false, present without a
// value (?dry_run, ?dry_run=) is true, and anything strconv.ParseBool or yes/no/on/off do
// not cover is a 400 import.invalid_query.
func queryFlag(c *fiber.Ctx, name string) (bool, error) {
	args := c.Context().QueryArgs()
	if !args.Has(name) {
		return false, nil
	}
	if len(args.PeekMulti(name)) > 1 {
		return false, bad("import.invalid_query", "%s is given more than once", name)
	}
	v := strings.ToLower(strings.TrimSpace(string(args.Peek(name))))
	switch v {
	case "", "yes", "on", "y":
		return true, nil
	case "no", "off", "n":
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, bad("import.invalid_query", "%s=%q is not a boolean (true/false, yes/no, on/off; no value means true)", name, truncate(v))
	}
	return b, nil
}

// fail writes err as {"error":{code,message}} with its status (500 for store failures).
func (s *Store) fail(c *fiber.Ctx, err error) error {
	var e *Error
	if errors.As(err, &e) {
		body := admin.ErrorBody(e.Code, e.Message)
		if e.Event != nil {
			body["event"] = e.Event
		}
		return c.Status(e.Status).JSON(body)
	}
	s.log.Error("admin API state error", "path", c.Path(), "err", err)
	return c.Status(http.StatusInternalServerError).JSON(admin.ErrorBody("state.error", err.Error()))
}

// decode reads a JSON body strictly: unknown fields and trailing data are errors, so a
// typo in a field name is not silently a missing value.
func decode(c *fiber.Ctx, v any) error {
	if !admin.IsJSON(c) {
		return errf(http.StatusUnsupportedMediaType, "invalid.content_type", "send Content-Type: application/json")
	}
	dec := json.NewDecoder(bytes.NewReader(c.Body()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bad("invalid.json", "request body: %v", err)
	}
	if dec.More() {
		return bad("invalid.json", "request body: trailing data after the JSON object")
	}
	return nil
}

func (s *Store) hGrant(c *fiber.Ctx) error {
	var in ConsentInput
	if err := decode(c, &in); err != nil {
		return s.fail(c, err)
	}
	res, err := s.Grant(c.UserContext(), in, admin.Actor(c))
	if err != nil {
		return s.fail(c, err)
	}
	return c.Status(recordedStatus(res)).JSON(res)
}

// recordedStatus is the answer's status for a recorded event: 201, or 200 when the event
// is in the ledger but changed nothing (older than the current state: "no_effect" and
// "note" in the body say so). Still a success: retrying would not change the outcome.
func recordedStatus(res Result) int {
	if res.NoEffect {
		return http.StatusOK
	}
	return http.StatusCreated
}

func (s *Store) hWithdraw(c *fiber.Ctx) error {
	var in ConsentInput
	if err := decode(c, &in); err != nil {
		return s.fail(c, err)
	}
	res, err := s.Withdraw(c.UserContext(), in, admin.Actor(c))
	if err != nil {
		var e *Error
		if res.Event.Seq != 0 && errors.As(err, &e) {
			// Recorded, but the erasure it triggers failed: say both.
			body := admin.ErrorBody(e.Code, e.Message)
			body["result"] = res
			return c.Status(e.Status).JSON(body)
		}
		return s.fail(c, err)
	}
	return c.Status(recordedStatus(res)).JSON(res)
}

func (s *Store) hCustomer(c *fiber.Ctx) error {
	v, err := s.Customer(c.UserContext(), c.Params("id"))
	if err != nil {
		return s.fail(c, err)
	}
	return c.JSON(v)
}

// customerBody is PUT /customers/{id}.
type customerBody struct {
	RetentionUntil *time.Time `json:"retention_until"`
	// RetentionInPast "confirm" accepts a deadline already past (CheckRetentionDeadline).
	RetentionInPast string `json:"retention_in_past"`
}

func (s *Store) hPutCustomer(c *fiber.Ctx) error {
	var b customerBody
	if err := decode(c, &b); err != nil {
		return s.fail(c, err)
	}
	if err := s.CheckRetentionDeadline(b.RetentionUntil, b.RetentionInPast); err != nil {
		return s.fail(c, err)
	}
	out, err := s.PutCustomer(c.UserContext(), Customer{ID: c.Params("id"), RetentionUntil: b.RetentionUntil, UpdatedBy: admin.Actor(c)})
	if err != nil {
		return s.fail(c, err)
	}
	return c.JSON(out)
}

func (s *Store) hHistory(c *fiber.Ctx) error {
	h, err := s.History(c.UserContext(), c.Params("id"))
	if err != nil {
		return s.fail(c, err)
	}
	return c.JSON(fiber.Map{"customer_id": c.Params("id"), "events": h})
}

// caseBody is PUT /cases/{id}.
type caseBody struct {
	CustomerID string   `json:"customer_id"`
	Assignees  []string `json:"assignees"`
	Status     string   `json:"status"`
	Purpose    string   `json:"purpose"`
}

func (s *Store) hPutCase(c *fiber.Ctx) error {
	var b caseBody
	if err := decode(c, &b); err != nil {
		return s.fail(c, err)
	}
	out, err := s.PutCase(c.UserContext(), Case{ID: c.Params("id"), CustomerID: b.CustomerID, Assignees: b.Assignees, Status: b.Status, Purpose: b.Purpose, UpdatedBy: admin.Actor(c)})
	if err != nil {
		return s.fail(c, err)
	}
	return c.JSON(out)
}

func (s *Store) hCase(c *fiber.Ctx) error {
	out, err := s.Case(c.UserContext(), c.Params("id"))
	if err != nil {
		return s.fail(c, err)
	}
	return c.JSON(out)
}

// agreementBody is PUT /agreements/{processor_id}.
type agreementBody struct {
	Purposes   []string   `json:"purposes"`
	Categories []string   `json:"categories"`
	ValidFrom  *time.Time `json:"valid_from"`
	ValidUntil *time.Time `json:"valid_until"`
}

func (s *Store) hPutAgreement(c *fiber.Ctx) error {
	var b agreementBody
	if err := decode(c, &b); err != nil {
		return s.fail(c, err)
	}
	out, err := s.PutAgreement(c.UserContext(), Agreement{ProcessorID: c.Params("id"), Purposes: b.Purposes, Categories: b.Categories, ValidFrom: b.ValidFrom, ValidUntil: b.ValidUntil, UpdatedBy: admin.Actor(c)})
	if err != nil {
		return s.fail(c, err)
	}
	return c.JSON(out)
}

func (s *Store) hAgreement(c *fiber.Ctx) error {
	out, err := s.Agreement(c.UserContext(), c.Params("id"))
	if err != nil {
		return s.fail(c, err)
	}
	return c.JSON(out)
}

// Client calls the admin API (the CLI uses it; so can scripts and tests).
type Client struct {
	// BaseURL is the admin listener, e.g. http://127.0.0.1:9400.
	BaseURL string
	Token   string
	HTTP    *http.Client
	// Context, when set, bounds every request (the CLI's: Ctrl-C and SIGTERM cancel it).
	Context context.Context
}

// Do sends body (JSON-encoded unless it is an io.Reader) and decodes the answer into out.
// An error answer becomes an *Error with the server's code and status.
func (cl *Client) Do(method, path string, body, out any) error {
	var rd io.Reader
	ctype := fiber.MIMEApplicationJSON
	switch b := body.(type) {
	case nil:
	case io.Reader:
		rd, ctype = b, "text/csv"
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(buf)
	}
	ctx := cl.Context
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(cl.BaseURL, "/")+"/v1"+path, rd)
	if err != nil {
		return err
	}
	if rd != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if cl.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.Token)
	}
	h := cl.httpClient()
	resp, err := h.Do(req)
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &eb) != nil || eb.Error.Code == "" {
			return &Error{Status: resp.StatusCode, Code: "http." + strconv.Itoa(resp.StatusCode), Message: strings.TrimSpace(string(data))}
		}
		return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("admin API answer: %w", err)
		}
	}
	return nil
}

// httpClient is cl.HTTP or, unset, one that never follows a redirect: a 302 to a login page
// would turn a POST into a bodyless GET whose 200 read as success (a consent never recorded),
// and a 307 would resend the admin token and the body elsewhere. A 3xx is an error.
func (cl *Client) httpClient() *http.Client {
	if cl.HTTP != nil {
		return cl.HTTP
	}
	return &http.Client{Timeout: 5 * time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
