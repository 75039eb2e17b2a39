package auditlog

// Fingerprint names the pseudonym key without revealing it: "kf_" + 32 hex digits of the HMAC
// of a fixed string under the key, in a domain of its own (no customer or subject id can
// produce it). Checkpoints carry it, so a reader holding another key can tell "not the log's
// key" from "nothing recorded".
func (p *Pseudonymizer) Fingerprint() string {
	return p.sum("kf_", "pseudonym-key-fingerprint\x00", "consentry decision log")
}
