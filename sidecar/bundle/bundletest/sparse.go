package bundletest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"testing"
)

// Sparse formats SparseTar writes.
const (
	// SparsePAX10 is GNU tar's PAX sparse format 1.0 (`tar --sparse --sparse-version=1.0
	// --format=pax`): archive/tar returns such an entry as a regular file whose Size is the
	// expanded size.
	SparsePAX10 = "pax-1.0"
	// SparseOldGNU is the old GNU 'S' entry (`tar --sparse --format=gnu`).
	SparseOldGNU = "old-gnu"
)

// SparseTar writes a gzip tarball of n sparse entries named /x/<i>/data.json, each expanding
// to realSize bytes (zeros, one data byte at the end) from about a kilobyte of tar stream. Go's
// tar writer cannot write sparse entries, so the blocks are laid out by hand, as GNU tar
// lays them out.
func SparseTar(t testing.TB, format string, n int, realSize int64) []byte {
	t.Helper()
	var tarBuf bytes.Buffer
	for i := range n {
		name := fmt.Sprintf("/x/%d/data.json", i)
		switch format {
		case SparsePAX10:
			records := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
				paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", fmt.Sprint(realSize))
			tarBuf.Write(tarHeader(fmt.Sprintf("./PaxHeaders/%d", i), 'x', int64(len(records)), false)[:])
			tarBuf.Write(padBlock([]byte(records)))
			// The data section: the sparse map (entries, then offset and length of each),
			// padded to a block, then the data of the one non-hole region.
			sparseMap := padBlock(fmt.Appendf(nil, "1\n%d\n1\n", realSize-1))
			tarBuf.Write(tarHeader(fmt.Sprintf("/x/%d/GNUSparseFile.0/data.json", i), '0', int64(len(sparseMap))+1, false)[:])
			tarBuf.Write(padBlock(append(sparseMap, '{')))
		case SparseOldGNU:
			h := tarHeader(name, 'S', 1, true)
			copy(h[386:], fmt.Sprintf("%011o\x00%011o\x00", realSize-1, 1)) // the one sparse entry
			copy(h[483:], fmt.Sprintf("%011o\x00", realSize))               // realsize
			checksum(h)
			tarBuf.Write(h[:])
			tarBuf.Write(padBlock([]byte("{")))
		default:
			t.Fatalf("SparseTar: unknown format %q", format)
		}
	}
	tarBuf.Write(make([]byte, 1024)) // end of archive
	var out bytes.Buffer
	gz := gzip.NewWriter(&out)
	if _, err := gz.Write(tarBuf.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// paxRecord is one "<length> <key>=<value>\n" record, the length counting itself.
func paxRecord(k, v string) string {
	body := " " + k + "=" + v + "\n"
	n := len(body) + 1
	for len(fmt.Sprint(n))+len(body) != n {
		n++
	}
	return fmt.Sprint(n) + body
}

// tarHeader is a ustar (or, with gnu, old GNU) header block with its checksum.
func tarHeader(name string, typeflag byte, size int64, gnu bool) *[512]byte {
	var h [512]byte
	copy(h[0:100], name)
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], fmt.Sprintf("%011o\x00", size))
	copy(h[136:], fmt.Sprintf("%011o\x00", 0))
	h[156] = typeflag
	if gnu {
		copy(h[257:], "ustar  \x00")
	} else {
		copy(h[257:], "ustar\x0000")
	}
	checksum(&h)
	return &h
}

func checksum(h *[512]byte) {
	copy(h[148:156], "        ")
	sum := 0
	for _, b := range h {
		sum += int(b)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", sum))
}

// padBlock pads b with zeros to a whole number of 512-byte blocks.
func padBlock(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}
