package kongfake

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Kong's paging limits (and the description's pagination-size parameter).
const (
	defaultPageSize = 100
	maxPageSize     = 1000
	maxTagFilter    = 5
)

// listQuery is a list request's size, offset and tag filter.
type listQuery struct {
	size  int
	after string   // the id the previous page ended on; "" for the first page
	tags  []string // filter; empty for none
	any   bool     // tags joined by '/' (any of) rather than ',' (all of)
}

func parseListQuery(q url.Values) (listQuery, *kongError) {
	lq := listQuery{size: defaultPageSize}
	if v := q.Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return lq, &kongError{status: 400, code: 9, name: "invalid size",
				msg: "size must be an integer between 1 and 1000"}
		}
		lq.size = n
	}
	if v := q.Get("offset"); v != "" {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		var ids []string
		if err != nil || json.Unmarshal(raw, &ids) != nil || len(ids) != 1 {
			return lq, invalidOffset(v)
		}
		lq.after = ids[0]
	}
	if v := q.Get("tags"); v != "" {
		hasAnd, hasOr := strings.Contains(v, ","), strings.Contains(v, "/")
		if hasAnd && hasOr {
			return lq, invalidOptions("tags: invalid filter syntax")
		}
		sep := ","
		if hasOr {
			sep, lq.any = "/", true
		}
		lq.tags = strings.Split(v, sep)
		if len(lq.tags) > maxTagFilter {
			return lq, invalidOptions("tags: cannot query more than 5 tags")
		}
		if slices.Contains(lq.tags, "") {
			return lq, invalidOptions("tags: invalid filter syntax")
		}
	}
	return lq, nil
}

// matches reports whether an entity with these tags passes the filter.
func (lq listQuery) matches(tags []string) bool {
	if len(lq.tags) == 0 {
		return true
	}
	for _, t := range lq.tags {
		has := slices.Contains(tags, t)
		if lq.any && has {
			return true
		}
		if !lq.any && !has {
			return false
		}
	}
	return !lq.any
}

// page is one page of a list answer.
type page struct {
	data   []map[string]any
	offset string // "" on the last page
}

// paginate cuts the id-sorted items after lq.after into one page of lq.size.
func paginate[T any](items []T, id func(T) string, tags func(T) []string, entity func(T) map[string]any, lq listQuery) page {
	var pg page
	pg.data = []map[string]any{}
	for _, it := range items {
		if lq.after != "" && id(it) <= lq.after {
			continue
		}
		if !lq.matches(tags(it)) {
			continue
		}
		if len(pg.data) == lq.size {
			last := pg.data[len(pg.data)-1]["id"].(string)
			raw, _ := json.Marshal([]string{last})
			pg.offset = base64.RawURLEncoding.EncodeToString(raw)
			break
		}
		pg.data = append(pg.data, entity(it))
	}
	return pg
}

// answer is Kong's list body: data, next (the path of the next page, or null), and offset when
// there is a next page.
func (pg page) answer(path string, lq listQuery) map[string]any {
	out := map[string]any{"data": pg.data, "next": nil}
	if pg.offset != "" {
		q := url.Values{"offset": {pg.offset}}
		if lq.size != defaultPageSize {
			q.Set("size", strconv.Itoa(lq.size))
		}
		if len(lq.tags) > 0 {
			sep := ","
			if lq.any {
				sep = "/"
			}
			q.Set("tags", strings.Join(lq.tags, sep))
		}
		out["next"] = path + "?" + q.Encode()
		out["offset"] = pg.offset
	}
	return out
}
