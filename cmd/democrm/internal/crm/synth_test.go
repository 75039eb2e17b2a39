package crm

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestGenerateDeterministic(t *testing.T) {
	a, b := Generate(300, 7), Generate(300, 7)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed gave different data sets")
	}
	if reflect.DeepEqual(a.Customers, Generate(300, 8).Customers) {
		t.Fatal("different seeds gave the same customers")
	}
	if small := Generate(10, 7); !reflect.DeepEqual(small.Customers, a.Customers[:10]) {
		t.Fatal("the first customers depend on n")
	}
}

func TestGenerateShape(t *testing.T) {
	d := Generate(500, 42)
	if len(d.Customers) != 500 || len(d.Cases) == 0 || len(d.Notes) == 0 {
		t.Fatalf("%d customers, %d cases, %d notes", len(d.Customers), len(d.Cases), len(d.Notes))
	}
	expiry := regexp.MustCompile(`^(0[1-9]|1[0-2])/\d\d$`)
	ids := map[string]bool{}
	for _, c := range d.Customers {
		ids[c.ID] = true
		if !ValidID(c.ID) || c.Name == "" || !strings.Contains(c.Contact.Email, "@example.") ||
			c.Contact.Phone == "" || c.Address == "" || c.Health.Notes == "" || c.MarketingSegment == "" {
			t.Fatalf("incomplete customer %+v", c)
		}
		if _, err := time.Parse("2006-01-02", c.DateOfBirth); err != nil {
			t.Fatalf("%s: date of birth: %v", c.ID, err)
		}
		if !LuhnValid(c.Payment.CardNumber) || len(c.Payment.CardNumber) != 16 || !strings.HasPrefix(c.Payment.CardNumber, "411111") {
			t.Fatalf("%s: card %q", c.ID, c.Payment.CardNumber)
		}
		if !expiry.MatchString(c.Payment.CardExpiry) {
			t.Fatalf("%s: expiry %q", c.ID, c.Payment.CardExpiry)
		}
	}
	for _, cs := range d.Cases {
		if !ids[cs.CustomerID] || len(cs.Assignees) == 0 || (cs.Status != "open" && cs.Status != "closed") {
			t.Fatalf("bad case %+v", cs)
		}
		if cs.ID != FixtureCase && cs.CustomerID == FixtureCustomer || cs.ID != OtherCase && cs.CustomerID == OtherCustomer {
			t.Fatalf("random case %s on a fixture customer", cs.ID)
		}
	}
	for _, n := range d.Notes {
		if !ids[n.CustomerID] {
			t.Fatalf("note %s for unknown customer %s", n.ID, n.CustomerID)
		}
	}
}

func TestLuhn(t *testing.T) {
	for number, want := range map[string]bool{
		"4111111111111111": true, "4242424242424242": true, "5555555555554444": true, "79927398713": true,
		"4111111111111112": false, "79927398710": false, "": false, "4111-1111": false,
	} {
		if got := LuhnValid(number); got != want {
			t.Errorf("LuhnValid(%q) = %v, want %v", number, got, want)
		}
	}
}

func TestKeyName(t *testing.T) {
	if got := KeyName("c-000123", ClassHealth); got != "consentry-c-000123-health" {
		t.Fatalf("KeyName = %q", got)
	}
	for field, class := range FieldClasses {
		c := Customer{}
		found := false
		for _, p := range classFields(&c, class) {
			*p = field
		}
		switch field {
		case "contact.email":
			found = c.Contact.Email == field
		case "contact.phone":
			found = c.Contact.Phone == field
		case "address":
			found = c.Address == field
		case "date_of_birth":
			found = c.DateOfBirth == field
		case "payment.card_number":
			found = c.Payment.CardNumber == field
		case "payment.card_expiry":
			found = c.Payment.CardExpiry == field
		case "health.notes":
			found = c.Health.Notes == field
		}
		if !found {
			t.Errorf("field %s is not encrypted with class %s", field, class)
		}
	}
}
