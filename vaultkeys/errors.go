package vaultkeys

import (
	"errors"
)

// Errors wrapped by every failure of this package. A front door maps them to a withheld field
// with Reason(err) as the reason code; none of them ever comes with plaintext.
var (
	// ErrUnavailable: Vault could not be reached, timed out, was sealed or answered an error.
	ErrUnavailable = errors.New("vault unavailable")
	// ErrUnauthenticated: consentry holds no valid Vault token right now (re-authenticating).
	ErrUnauthenticated = errors.New("not authenticated to vault")
	// ErrErased: the customer's keys were destroyed (crypto-shredded); they are never recreated.
	ErrErased = errors.New("customer keys were erased")
	// ErrNotReleased: the decision did not release this key scope (deny, or scope not allowed).
	ErrNotReleased = errors.New("key scope not released by the decision")
	// ErrNoKey: the customer has no key of this class in Vault (nothing was ever encrypted).
	ErrNoKey = errors.New("no key for this customer and class")
	// ErrNotExportable: the transit key exists but is not exportable (docs/key-model.md).
	ErrNotExportable = errors.New("transit key is not exportable")
	// ErrDecrypt: the value is not transit ciphertext of this key (wrong key, tampered, or a
	// version that no longer exists).
	ErrDecrypt = errors.New("value does not decrypt")
	// ErrInvalidCustomer: the customer id cannot name a key.
	ErrInvalidCustomer = errors.New("invalid customer id")
	// ErrUnknownScope: the scope is not one of the configured key classes.
	ErrUnknownScope = errors.New("unknown key scope")
)

// Reason codes for withheld fields, as they appear in decision log enforcement records.
const (
	ReasonUnavailable     = "keys.unavailable"
	ReasonUnauthenticated = "keys.unauthenticated"
	ReasonErased          = "keys.erased"
	ReasonNotReleased     = "keys.not_released"
	ReasonNoKey           = "keys.missing"
	ReasonNotExportable   = "keys.not_exportable"
	ReasonDecrypt         = "keys.decrypt_failed"
	ReasonInvalid         = "keys.invalid_request"
)

// Reason maps an error of this package to the reason code of the withheld field. Unknown
// errors map to keys.unavailable: whatever happened, the field is withheld.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrErased):
		return ReasonErased
	case errors.Is(err, ErrUnauthenticated):
		return ReasonUnauthenticated
	case errors.Is(err, ErrNotReleased):
		return ReasonNotReleased
	case errors.Is(err, ErrNoKey):
		return ReasonNoKey
	case errors.Is(err, ErrNotExportable):
		return ReasonNotExportable
	case errors.Is(err, ErrDecrypt):
		return ReasonDecrypt
	case errors.Is(err, ErrInvalidCustomer), errors.Is(err, ErrUnknownScope):
		return ReasonInvalid
	default:
		return ReasonUnavailable
	}
}
