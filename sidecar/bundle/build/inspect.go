package build

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// Info describes a bundle tarball without verifying it (Inspect never trusts what it shows).
type Info struct {
	Revision    string         `json:"revision"`
	Roots       []string       `json:"roots"`
	RegoVersion *int           `json:"rego_version,omitempty"`
	Schemas     []string       `json:"schemas,omitempty"`
	Files       []FileInfo     `json:"files"`
	Signature   *SignatureInfo `json:"signature,omitempty"`
	// Warnings name what the sidecar would refuse that Inspect could still read (entry
	// names that are not canonical, such as "./data.json" from `tar -C dir -czf b.tgz .`).
	Warnings []string        `json:"warnings,omitempty"`
	Manifest json.RawMessage `json:"-"`
}

// FileInfo is one file in the tarball.
type FileInfo struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// SignatureInfo is the decoded (unverified) signature.
type SignatureInfo struct {
	Algorithm string   `json:"alg"`
	KeyID     string   `json:"kid,omitempty"`
	Scope     string   `json:"scope,omitempty"`
	IssuedAt  int64    `json:"iat,omitempty"`
	Files     []string `json:"files"`
}

// Inspect lists a bundle's files, manifest and signature claims.
func Inspect(raw []byte) (*Info, error) {
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("not a gzip bundle: %w", err)
	}
	tr := tar.NewReader(gz)
	info := &Info{}
	var sigs []byte
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read bundle: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		body, err := io.ReadAll(io.LimitReader(tr, 256<<20))
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(h.Name, "/")
		sum := sha256.Sum256(body)
		info.Files = append(info.Files, FileInfo{Name: name, Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:])})
		// The loader and `bundle verify` match entry names exactly (OPA's reader trims only
		// a leading "/"), so "./.manifest" is read here to show what the bundle claims, and
		// named as the reason it will be refused.
		if clean := path.Clean(name); clean != name {
			info.Warnings = append(info.Warnings, fmt.Sprintf("entry %q is not a canonical name (%q): the sidecar and `bundle verify` refuse it (extra_file); build the tarball with `consentry bundle build`, or tar the directory's entries rather than \".\"", name, clean))
			name = clean
		}
		switch name {
		case ".manifest":
			info.Manifest = body
		case ".signatures.json":
			sigs = body
		}
	}
	sort.Slice(info.Files, func(i, j int) bool { return info.Files[i].Name < info.Files[j].Name })
	if info.Manifest != nil {
		var m struct {
			Revision    string         `json:"revision"`
			Roots       []string       `json:"roots"`
			RegoVersion *int           `json:"rego_version"`
			Metadata    map[string]any `json:"metadata"`
		}
		if err := json.Unmarshal(info.Manifest, &m); err != nil {
			return nil, fmt.Errorf(".manifest: %w", err)
		}
		info.Revision, info.Roots, info.RegoVersion = m.Revision, m.Roots, m.RegoVersion
		if c, ok := m.Metadata["consentry"].(map[string]any); ok {
			if s, ok := c["schemas"].(map[string]any); ok {
				for n := range s {
					info.Schemas = append(info.Schemas, n)
				}
				sort.Strings(info.Schemas)
			}
		}
	}
	if sigs != nil {
		si, err := decodeSignature(sigs)
		if err != nil {
			return nil, err
		}
		info.Signature = si
	}
	return info, nil
}

func decodeSignature(raw []byte) (*SignatureInfo, error) {
	var sc struct {
		Signatures []string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &sc); err != nil {
		return nil, fmt.Errorf(".signatures.json: %w", err)
	}
	if len(sc.Signatures) != 1 {
		return nil, fmt.Errorf(".signatures.json: %d signatures, expected exactly one", len(sc.Signatures))
	}
	parts := strings.Split(sc.Signatures[0], ".")
	if len(parts) != 3 {
		return nil, errors.New(".signatures.json: not a compact JWS")
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var payload struct {
		Files []struct {
			Name string `json:"name"`
		} `json:"files"`
		KeyID string `json:"keyid"`
		Scope string `json:"scope"`
		Iat   int64  `json:"iat"`
	}
	for i, dst := range []any{&hdr, &payload} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, fmt.Errorf(".signatures.json: %w", err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			return nil, fmt.Errorf(".signatures.json: %w", err)
		}
	}
	si := &SignatureInfo{Algorithm: hdr.Alg, KeyID: hdr.Kid, Scope: payload.Scope, IssuedAt: payload.Iat}
	if si.KeyID == "" {
		si.KeyID = payload.KeyID
	}
	for _, f := range payload.Files {
		si.Files = append(si.Files, f.Name)
	}
	sort.Strings(si.Files)
	return si, nil
}
