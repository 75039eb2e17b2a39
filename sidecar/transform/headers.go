package transform

// The CRM headers a front door must not pass around a transformed response. The lists are
// shared so that the proxy and ext_proc enforce the same rules.

// RangeHeaders ask the CRM for a slice of the representation. A slice of a record is not a
// record: a byte range that is itself valid JSON (a denied field's bare value, an inner
// object) would be minimized as if it were the whole document. Removed from every request
// whose response is transformed (the transformer also refuses a 206: response.partial).
// Both front doors apply these lists: the proxy itself, ext_proc through Envoy's header
// mutations.
var RangeHeaders = []string{"Range", "If-Range"}

// ReadConditionalHeaders make the CRM answer 304/412 instead of the record, by comparing the
// caller's validator with the CRM's, which are computed over the whole stored record: a
// caller who guesses a denied value can compute the validator of the guess and read the
// answer (304: right). On GET and HEAD they are removed: the full 200 is always a correct
// answer, and it is minimized. On writes they are kept: removing If-Match would turn a
// conditional write into an unconditional one (a lost update); the caller of an authorized
// write learns one bit (412 or not), and consentry never hands it the CRM's validators.
var ReadConditionalHeaders = []string{"If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since"}

// BodyDerivedHeaders are the CRM's response headers that describe its body bytes or the whole
// stored record: after minimization they describe what the caller did not get. An ETag or digest of
// the full record lets a caller confirm a guess of a denied field offline, and its presence
// alone would say whether anything was removed (whether the customer has health notes).
// They are dropped from every transformed response, changed or not.
var BodyDerivedHeaders = []string{"Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified",
	"Content-MD5", "Digest", "Content-Digest", "Repr-Digest"}
