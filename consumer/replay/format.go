package replay

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Formats of the timeline.
const (
	FormatTable = "table"
	FormatJSONL = "jsonl"
	FormatCSV   = "csv"
)

// Writer prints events in one format; Close flushes.
type Writer interface {
	Write(Event) error
	Close() error
}

// NewWriter returns a Writer of format to w.
func NewWriter(format string, w io.Writer) (Writer, error) {
	switch format {
	case FormatTable:
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		t := &tableWriter{tw: tw}
		return t, t.row(columns)
	case FormatJSONL:
		return &jsonlWriter{enc: json.NewEncoder(w)}, nil
	case FormatCSV:
		c := &csvWriter{w: csv.NewWriter(w)}
		return c, c.w.Write(columns)
	}
	return nil, fmt.Errorf("format %q is not one of table, jsonl, csv", format)
}

var columns = []string{"TIME", "SEQ", "INCIDENT", "ACTION", "KIND", "KEY", "DETAIL"}

// fields is an event as the columns: an incident row, then its actions,
// each naming the incident's sequence so they line up.
func fields(ev Event) []string {
	t := ev.Time.Format(time.RFC3339Nano)
	if a := ev.Audit; a != nil {
		seq := "-"
		if a.EventSeq != 0 {
			seq = strconv.FormatUint(a.EventSeq, 10)
		}
		return []string{t, seq, dash(a.IncidentID), string(a.Action), dash(string(a.Kind)), dash(a.BlockKey), a.Detail}
	}
	i := ev.Incident
	if i.Invalid != "" {
		return []string{t, strconv.FormatUint(ev.Seq, 10), "-", "invalid", "-", "-", "from " + i.Source + ": " + oneLine(i.Invalid)}
	}
	detail := fmt.Sprintf("%s from %s, %d entities", i.Type, i.Source, i.Entities)
	if i.Title != "" {
		detail += ": " + i.Title
	}
	return []string{t, strconv.FormatUint(ev.Seq, 10), i.ID, "incident", "-", "-", detail}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// tableFlushRows: tabwriter aligns what it holds, so it is flushed every so
// many rows; a long replay streams in aligned chunks instead of buffering.
const tableFlushRows = 1000

type tableWriter struct {
	tw   *tabwriter.Writer
	rows int
}

func (t *tableWriter) row(f []string) error {
	for i := range f {
		f[i] = strings.ReplaceAll(f[i], "\t", " ")
	}
	_, err := io.WriteString(t.tw, strings.Join(f, "\t")+"\n")
	return err
}

func (t *tableWriter) Write(ev Event) error {
	if err := t.row(fields(ev)); err != nil {
		return err
	}
	if t.rows++; t.rows%tableFlushRows == 0 {
		return t.tw.Flush()
	}
	return nil
}
func (t *tableWriter) Close() error { return t.tw.Flush() }

type jsonlWriter struct{ enc *json.Encoder }

func (j *jsonlWriter) Write(ev Event) error { return j.enc.Encode(ev) }
func (j *jsonlWriter) Close() error         { return nil }

type csvWriter struct{ w *csv.Writer }

func (c *csvWriter) Write(ev Event) error { return c.w.Write(fields(ev)) }
func (c *csvWriter) Close() error {
	c.w.Flush()
	return c.w.Error()
}
