package crm

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Dataset is a complete synthetic data set, in plaintext.
type Dataset struct {
	Customers []Customer
	Notes     []Note
	Cases     []Case
}

// Fixture ids the seeded data always contains (for n >= 2), so a demo or test can rely on
// them: FixtureCase is an open case on FixtureCustomer assigned to FixtureAgent;
// OtherCustomer has only a case assigned to someone else.
const (
	FixtureCustomer = "c-000001"
	FixtureCase     = "case-1"
	FixtureAgent    = "emp-17"
	OtherCustomer   = "c-000002"
	OtherCase       = "case-2"
	OtherAgent      = "emp-23"
)

// Segments are the marketing segments seeded customers fall into.
var Segments = []string{"retail", "premium", "smb", "enterprise", "student"}

var (
	firstNames = []string{"Alice", "Bruno", "Chiara", "Daniel", "Elena", "Farid", "Greta", "Hugo", "Ines",
		"Jonas", "Kaito", "Lena", "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samir", "Tilde",
		"Uma", "Victor", "Wen", "Ximena", "Yusuf", "Zoe", "Amara", "Bjorn", "Clara", "Dmitri"}
	lastNames = []string{"Andersen", "Bianchi", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen",
		"Ivanova", "Jensen", "Kowalski", "Lambert", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn",
		"Rossi", "Schmidt", "Tanaka", "Urban", "Varga", "Weber", "Xu", "Yilmaz", "Zimmermann"}
	streets = []string{"Harbour Road", "Linden Street", "Mill Lane", "Station Avenue", "Church Street",
		"Elm Grove", "Market Square", "Kings Way", "Orchard Close", "River Walk"}
	cities = []string{"Springfield", "Riverton", "Lakeside", "Hillcrest", "Brookfield", "Fairview",
		"Maplewood", "Oakdale"}
	healthNotes = []string{"No known conditions", "Penicillin allergy", "Type 2 diabetes, on metformin",
		"Asthma, uses inhaler", "Hearing impaired: prefers email contact", "Pregnant, due in spring",
		"Recovering from knee surgery", "Coeliac disease", "Hypertension, on medication",
		"Wheelchair user: needs step-free delivery"}
	noteBodies = []string{"Called about a late delivery; apologised and offered a voucher.",
		"Asked to update the billing address.", "Complained about duplicate charge on the card.",
		"Requested a copy of their data.", "Interested in the premium plan.",
		"Prefers to be contacted in the evening."}
	caseSubjects = []string{"Duplicate charge on card", "Late delivery", "Cannot log in",
		"Address change request", "Refund request", "Product defect"}
)

// seedEpoch anchors every generated timestamp so the data set is identical across runs.
var seedEpoch = time.Date(2024, 1, 1, 9, 0, 0, 0, time.UTC)

// Generate builds n customers with notes and cases, deterministically from seed: the same
// (n, seed) always yields the same data set, and the first k customers of a larger n equal
// those of a smaller one except for cross-references.
func Generate(n int, seed uint64) Dataset {
	rng := rand.New(rand.NewPCG(seed, 0x636f6e73656e7472)) // second word: "consentr"
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	var d Dataset
	for i := 1; i <= n; i++ {
		first, last := pick(firstNames), pick(lastNames)
		created := seedEpoch.Add(time.Duration(rng.IntN(600*24)) * time.Hour)
		dob := time.Date(1940+rng.IntN(66), time.Month(1+rng.IntN(12)), 1+rng.IntN(28), 0, 0, 0, 0, time.UTC)
		d.Customers = append(d.Customers, Customer{
			ID:   fmt.Sprintf("c-%06d", i),
			Name: first + " " + last,
			Contact: Contact{
				Email: fmt.Sprintf("%s.%s%d@example.%s", strings.ToLower(first), strings.ToLower(last), i,
					[]string{"com", "org", "net"}[rng.IntN(3)]),
				// Ofcom's range reserved for fiction, so no real person gets called.
				Phone: fmt.Sprintf("+44 7700 900%03d", rng.IntN(1000)),
			},
			Address:     fmt.Sprintf("%d %s, %s", 1+rng.IntN(199), pick(streets), pick(cities)),
			DateOfBirth: dob.Format("2006-01-02"),
			Payment: Payment{
				CardNumber: testCardNumber(rng),
				CardExpiry: fmt.Sprintf("%02d/%02d", 1+rng.IntN(12), 27+rng.IntN(5)),
			},
			Health:           Health{Notes: pick(healthNotes)},
			MarketingSegment: pick(Segments),
			CreatedAt:        created,
			UpdatedAt:        created.Add(time.Duration(rng.IntN(2000)) * time.Hour),
		})
	}
	if n == 0 {
		return d
	}
	addCase := func(customer, status string, assignees ...string) {
		d.Cases = append(d.Cases, Case{
			ID: fmt.Sprintf("case-%d", len(d.Cases)+1), CustomerID: customer, Subject: pick(caseSubjects),
			Status: status, Assignees: assignees, CreatedAt: seedEpoch.Add(time.Duration(rng.IntN(600*24)) * time.Hour),
		})
	}
	if n >= 2 {
		addCase(FixtureCustomer, "open", FixtureAgent)
		addCase(OtherCustomer, "open", OtherAgent)
	}
	for range max(n/10, 1) {
		// Random cases leave the two fixture customers alone so their case set stays known.
		cust := 3 + rng.IntN(max(n-2, 1))
		if cust > n {
			break
		}
		assignees := []string{fmt.Sprintf("emp-%d", 1+rng.IntN(40))}
		if rng.IntN(4) == 0 {
			assignees = append(assignees, fmt.Sprintf("emp-%d", 1+rng.IntN(40)))
		}
		addCase(fmt.Sprintf("c-%06d", cust), []string{"open", "closed"}[rng.IntN(2)], assignees...)
	}
	for i := range max(n/4, 1) {
		cust := d.Customers[rng.IntN(n)]
		switch {
		case i == 0:
			cust = d.Customers[0]
		case i == 1 && n > 2:
			cust = d.Customers[2] // the demo tour's erasure shows a note of c-000003 unreadable
		}
		d.Notes = append(d.Notes, Note{
			ID: fmt.Sprintf("n-%06d", i+1), CustomerID: cust.ID, Body: pick(noteBodies),
			Author: fmt.Sprintf("emp-%d", 1+rng.IntN(40)), CreatedAt: cust.CreatedAt.Add(time.Duration(1+rng.IntN(500)) * time.Hour),
		})
	}
	return d
}

// testCardNumber returns a Luhn-valid 16-digit number in the 411111 test range.
func testCardNumber(rng *rand.Rand) string {
	digits := []byte("411111")
	for len(digits) < 15 {
		digits = append(digits, byte('0'+rng.IntN(10)))
	}
	return string(append(digits, luhnCheckDigit(digits)))
}

// luhnCheckDigit computes the digit that makes payload+digit pass the Luhn check.
func luhnCheckDigit(payload []byte) byte {
	sum := 0
	for i := len(payload) - 1; i >= 0; i-- {
		d := int(payload[i] - '0')
		if (len(payload)-1-i)%2 == 0 { // doubled: every second digit counting from the check digit
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return byte('0' + (10-sum%10)%10)
}

// LuhnValid reports whether number (digits only) passes the Luhn check.
func LuhnValid(number string) bool {
	if len(number) < 2 {
		return false
	}
	for _, r := range number {
		if r < '0' || r > '9' {
			return false
		}
	}
	return luhnCheckDigit([]byte(number[:len(number)-1])) == number[len(number)-1]
}
