package consent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/gofiber/fiber/v2"
)

func (s *Store) hImport(c *fiber.Ctx) error {
	// Strictly: a dry run asked for in any spelling that is not understood must not become a
	// real import (c.QueryBool answers false for "?dry_run", "yes", "on").
	dry, err := queryFlag(c, "dry_run")
	if err != nil {
		return s.fail(c, err)
	}
	var capturedNow bool
	switch v := c.Query("captured_at"); v {
	case "":
	case "now":
		capturedNow = true
	default:
		return s.fail(c, bad("import.invalid_query", "captured_at=%q: the only default capture date is now (captured_at=now)", truncate(v)))
	}
	opts := ImportOptions{
		DryRun:        dry,
		CapturedNow:   capturedNow,
		Purpose:       c.Query("purpose"),
		Channel:       c.Query("channel"),
		NoticeVersion: c.Query("notice_version"),
		NoticeHash:    c.Query("notice_hash"),
		DefaultStatus: c.Query("default_status"),
		Timezone:      c.Query("timezone"),
		// retention_in_past=confirm: retention deadlines already past are meant (any other
		// value is refused by ImportOptions.check).
		RetentionInPast: c.Query("retention_in_past"),
	}
	for _, m := range strings.Split(c.Query("map"), ",") {
		if m == "" {
			continue
		}
		col, field, ok := strings.Cut(m, "=")
		if !ok {
			return s.fail(c, bad("import.invalid_map", "map entries are column=field, got %q", m))
		}
		if opts.Columns == nil {
			opts.Columns = map[string]string{}
		}
		opts.Columns[col] = field
	}
	rep, err := s.Import(c.UserContext(), bytes.NewReader(c.Body()), opts, admin.Actor(c))
	if err != nil {
		return s.failImport(c, err, rep)
	}
	return c.JSON(rep)
}

// failImport answers an import that failed. Once rows were read, the report so far goes
// with the error ("report"): a database error part-way leaves the rows of the batches
// before it written, and the caller must learn which (committed_lines).
func (s *Store) failImport(c *fiber.Ctx, err error, rep ImportReport) error {
	if rep.Rows == 0 {
		return s.fail(c, err)
	}
	status, code, msg := http.StatusInternalServerError, "state.error", err.Error()
	var e *Error
	if errors.As(err, &e) {
		status, code, msg = e.Status, e.Code, e.Message
	}
	if status >= 500 {
		s.log.Error("admin API state error", "path", c.Path(), "err", err)
	}
	body := admin.ErrorBody(code, msg)
	body["report"] = rep
	return c.Status(status).JSON(body)
}

// importChunkBytes keeps each import request well under the admin server's body limit
// (admin.MaxBodyBytes, 4 MiB): a CRM export of millions of rows goes as many requests.
var importChunkBytes = 1 << 20

// ImportFailure is the error of a Client.Import that stopped part-way. The file's lines up
// to Done were processed: the report's totals and rejections account for each of them.
// Of the lines after it up to Last (the part being sent), Committed were written and the
// others were not - unless !Known (no answer from the server), when any may have been.
// Lines after Last were not sent.
type ImportFailure struct {
	Done, Last int
	Committed  []int
	Known      bool
	Err        error
}

func (f *ImportFailure) Error() string { return f.Err.Error() }
func (f *ImportFailure) Unwrap() error { return f.Err }

// Summary says in words which lines were written.
func (f *ImportFailure) Summary() string {
	var b strings.Builder
	if f.Done >= 2 {
		fmt.Fprintf(&b, "lines 2-%d were processed (see the totals)", f.Done)
	} else {
		b.WriteString("no line was processed")
	}
	if f.Last > f.Done {
		fmt.Fprintf(&b, "; of lines %d-%d, ", f.Done+1, f.Last)
		switch {
		case !f.Known:
			b.WriteString("any may have been written (no answer from the server)")
		case len(f.Committed) == 0:
			b.WriteString("none was written")
		default:
			b.WriteString("these were written: " + lineRanges(f.Committed) + "; the others were not")
		}
		fmt.Fprintf(&b, "; lines after %d were not sent", f.Last)
	} else {
		fmt.Fprintf(&b, "; lines after %d were not sent", f.Done)
	}
	b.WriteString(". Running the same import again is safe: rows already recorded count as duplicates")
	return b.String()
}

// lineRanges writes sorted line numbers as "2-5, 9".
func lineRanges(lines []int) string {
	var parts []string
	for i := 0; i < len(lines); {
		j := i
		for j+1 < len(lines) && lines[j+1] == lines[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(lines[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", lines[i], lines[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// Import sends a CSV export to POST /consents/import in chunks (each with the header row)
// and merges the reports; rejection line numbers refer to the whole file. Rows are
// ordered by captured_at within a chunk, chunks are applied in file order. A quote that is
// never closed refuses the file, before anything is sent when r can seek (a file), else
// when the chunk reaching it is due. When the import stops part-way, the report so far
// comes back with an *ImportFailure; a first part refused (the header, the query) is the
// server's error as it is, nothing having been imported.
func (cl *Client) Import(r io.Reader, query string) (ImportReport, error) {
	total := ImportReport{Rejections: []Rejection{}}
	if rs, ok := r.(io.ReadSeeker); ok {
		if start, err := rs.Seek(0, io.SeekCurrent); err == nil { // not a pipe
			if err := checkQuotes(rs); err != nil {
				return total, err
			}
			if _, err := rs.Seek(start, io.SeekStart); err != nil {
				return total, fmt.Errorf("import: rewind: %w", err)
			}
		}
	}
	br := bufio.NewReaderSize(r, 64<<10)
	header, err := readCSVRecord(br)
	if err != nil && !errors.Is(err, io.EOF) {
		return total, fmt.Errorf("import: %w", err)
	}
	if len(bytes.TrimSpace(bytes.TrimPrefix(header, []byte("\ufeff")))) == 0 {
		return total, bad("import.empty", "the CSV is empty: a header row is required")
	}
	offset := 0 // data lines sent before this chunk
	var broken error
	for eof := false; !eof && broken == nil; {
		var chunk bytes.Buffer
		chunk.Write(header)
		if !bytes.HasSuffix(header, []byte("\n")) {
			chunk.WriteByte('\n')
		}
		lines := 0
		for chunk.Len() < importChunkBytes && !eof {
			rec, err := readCSVRecord(br)
			if errors.Is(err, io.EOF) {
				eof = true
			} else if err != nil {
				return total, &ImportFailure{Done: offset + 1, Known: true, Err: fmt.Errorf("import: read: %w", err)}
			}
			if len(rec) == 0 {
				continue
			}
			if eof && bytes.Count(rec, []byte{'"'})%2 == 1 {
				broken = unclosedQuote(offset + lines + 2)
				break
			}
			chunk.Write(rec)
			if !bytes.HasSuffix(rec, []byte("\n")) {
				chunk.WriteByte('\n')
				lines++ // the last line of a file without a final newline
			}
			lines += bytes.Count(rec, []byte("\n"))
		}
		if lines == 0 && (offset > 0 || broken != nil) {
			break
		}
		rep, partial, err := cl.importPart(query, &chunk)
		if err != nil {
			var e *Error
			refused := partial == nil && errors.As(err, &e) && e.Status/100 == 4 // nothing of this part written
			if refused && offset == 0 {
				return total, err // the header or the query: nothing was imported
			}
			f := &ImportFailure{Done: offset + 1, Last: offset + lines + 1, Err: err, Known: partial != nil || refused}
			if partial != nil {
				total.merge(*partial, offset)
				for _, l := range partial.CommittedLines {
					f.Committed = append(f.Committed, l+offset)
				}
				total.CommittedLines = f.Committed
			}
			return total, f
		}
		total.merge(rep, offset)
		offset += lines
	}
	if broken != nil {
		return total, &ImportFailure{Done: offset + 1, Known: true, Err: broken}
	}
	return total, nil
}

func unclosedQuote(line int) error {
	return bad("import.invalid_csv", "line %d: a double quote on this line is never closed (or stands bare in a field): the rest of the file would be read as one field; fix the quoting", line)
}

// merge adds a part's report, whose lines start after offset data lines.
func (t *ImportReport) merge(rep ImportReport, offset int) {
	t.DryRun = rep.DryRun
	t.Rows += rep.Rows
	t.Accepted += rep.Accepted
	t.Duplicates += rep.Duplicates
	t.Rejected += rep.Rejected
	t.Customers += rep.Customers
	if t.IgnoredColumns == nil {
		t.IgnoredColumns = rep.IgnoredColumns // the same header in every part
	}
	for _, rj := range rep.Rejections {
		rj.Line += offset
		t.Rejections = append(t.Rejections, rj)
	}
}

// checkQuotes reads the whole file for a quote that is never closed, so that such a file is
// refused before any part of it is imported (nothing was imported).
func checkQuotes(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	line := 1
	for {
		rec, err := readCSVRecord(br)
		if errors.Is(err, io.EOF) {
			if bytes.Count(rec, []byte{'"'})%2 == 1 {
				return fmt.Errorf("%w (nothing was imported)", unclosedQuote(line))
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("import: read: %w", err)
		}
		line += bytes.Count(rec, []byte("\n"))
	}
}

// importPart posts one part. An error answer that carries the server's report (the import
// failed part-way) returns it as partial.
func (cl *Client) importPart(query string, body io.Reader) (rep ImportReport, partial *ImportReport, err error) {
	ctx := cl.Context
	if ctx == nil {
		ctx = context.Background()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(cl.BaseURL, "/")+"/v1/consents/import?"+query, body)
	if err != nil {
		return rep, nil, err
	}
	req.Header.Set("Content-Type", "text/csv")
	if cl.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.Token)
	}
	h := cl.httpClient()
	resp, err := h.Do(req)
	if err != nil {
		return rep, nil, fmt.Errorf("admin API: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return rep, nil, fmt.Errorf("admin API: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(data, &rep); err != nil {
			return rep, nil, fmt.Errorf("admin API answer: %w", err)
		}
		return rep, nil, nil
	}
	var eb struct {
		Error struct {
			Code, Message string
		} `json:"error"`
		Report *ImportReport `json:"report"`
	}
	if json.Unmarshal(data, &eb) != nil || eb.Error.Code == "" {
		return rep, nil, &Error{Status: resp.StatusCode, Code: "http." + strconv.Itoa(resp.StatusCode), Message: strings.TrimSpace(string(data))}
	}
	return rep, eb.Report, &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
}

// readCSVRecord reads one CSV record's raw bytes (a quoted field may span lines).
func readCSVRecord(br *bufio.Reader) ([]byte, error) {
	var out []byte
	quotes := 0
	for {
		line, err := br.ReadBytes('\n')
		out = append(out, line...)
		quotes += bytes.Count(line, []byte(`"`))
		if err != nil {
			return out, err
		}
		if quotes%2 == 0 {
			return out, nil
		}
	}
}
