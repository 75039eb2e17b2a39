// Package crm is the demo CRM: a small customer-records HTTP API backed by SQLite.
//
// It plays the "existing CRM" that consentry is attached to, so it deliberately knows
// nothing about consentry. Sensitive fields (contact, address, date of birth, payment card,
// health notes, note bodies) are stored exactly as written by the client; when seeded against Vault they
// hold transit ciphertext (vault:v1:...) under per-customer, per-class keys, and the CRM
// never decrypts them.
package crm

import (
	"regexp"
	"time"
)

// Customer is the customer record as the API serves it. Sensitive string fields carry
// whatever the writer stored: Vault transit ciphertext in the demo, plaintext in tests.
type Customer struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	Contact          Contact   `json:"contact"`
	Address          string    `json:"address"`
	DateOfBirth      string    `json:"date_of_birth"`
	Payment          Payment   `json:"payment"`
	Health           Health    `json:"health"`
	MarketingSegment string    `json:"marketing_segment"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
}

// Contact holds the contact details (key class "contact").
type Contact struct {
	Email string `json:"email"`
	Phone string `json:"phone"`
}

// Payment holds the payment card (key class "financial").
type Payment struct {
	CardNumber string `json:"card_number"`
	CardExpiry string `json:"card_expiry"`
}

// Health holds health information (key class "health").
type Health struct {
	Notes string `json:"notes"`
}

// Note is a free-text note attached to a customer.
type Note struct {
	ID         string    `json:"id"`
	CustomerID string    `json:"customer_id"`
	Body       string    `json:"body"`
	Author     string    `json:"author"`
	CreatedAt  time.Time `json:"created_at"`
}

// Case is a support case about a customer, worked by its assignees (employee ids).
type Case struct {
	ID         string    `json:"id"`
	CustomerID string    `json:"customer_id"`
	Subject    string    `json:"subject"`
	Status     string    `json:"status"`
	Assignees  []string  `json:"assignees"`
	CreatedAt  time.Time `json:"created_at"`
}

// Page is the envelope of every list response.
type Page[T any] struct {
	Items    []T `json:"items"`
	Page     int `json:"page"`
	PageSize int `json:"page_size"`
	Total    int `json:"total"`
}

// List is the envelope of the unpaged list responses (notes, cases).
type List[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
}

// Key classes: the sensitive fields are grouped into these, one transit key per customer
// and class.
const (
	ClassContact   = "contact"
	ClassIdentity  = "identity"
	ClassFinancial = "financial"
	ClassHealth    = "health"
	// ClassNotes encrypts the bodies of a customer's notes: free text that may name anything
	// about the customer, so that erasing the customer's keys makes old copies unreadable too.
	ClassNotes = "notes"
)

// Classes lists the key classes in a fixed order.
var Classes = []string{ClassContact, ClassIdentity, ClassFinancial, ClassHealth, ClassNotes}

// FieldClasses maps each sensitive field (dotted JSON path) to its key class.
var FieldClasses = map[string]string{
	"contact.email":       ClassContact,
	"contact.phone":       ClassContact,
	"address":             ClassContact,
	"date_of_birth":       ClassIdentity,
	"payment.card_number": ClassFinancial,
	"payment.card_expiry": ClassFinancial,
	"health.notes":        ClassHealth,
}

// KeyType is the transit key type seeding creates. Keys are created exportable, which the
// consentry key model needs (it exports a key and decrypts locally).
const KeyType = "aes256-gcm96"

// KeyName is the transit key holding one customer's fields of one class. The name is the
// contract shared with consentry's key model: consentry-<customer_id>-<class>.
func KeyName(customerID, class string) string {
	return "consentry-" + customerID + "-" + class
}

// idPattern restricts customer ids to characters that are safe in a URL segment and in a
// Vault transit key name.
var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidID reports whether id is acceptable as a customer id.
func ValidID(id string) bool { return idPattern.MatchString(id) }
