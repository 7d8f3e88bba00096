// What a Go service that kept float32 BLOBs in its own SQLite file does once it talks to
// `dualvec serve`: the standard library only (no modules, no network).
//
//	go run main.go BASE_URL COLLECTION
//
// Upserts 40 records with integer ids (as decimal strings) and vector_b64 built from
// little-endian float32, searches with a filter, deletes six of its records and one the app
// held before, exports the collection page by page until next_cursor is null, and counts. It
// exits 1 on the first surprise and prints one JSON document for the test to check the rest.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
)

var base, collection string

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func call(method, path string, body any, out any) {
	var reader *bytes.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			fail("marshal: %v", err)
		}
		reader = bytes.NewReader(raw)
	} else {
		reader = bytes.NewReader(nil)
	}
	request, err := http.NewRequest(method, base+path, reader)
	if err != nil {
		fail("request: %v", err)
	}
	if body != nil {
		request.Header.Set("Content-Type", "application/json")
	}
	response, err := http.DefaultClient.Do(request)
	if err != nil {
		fail("%s %s: %v", method, path, err)
	}
	defer response.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(response.Body)
	if response.StatusCode != http.StatusOK {
		fail("%s %s -> %d %s", method, path, response.StatusCode, buf.String())
	}
	if err := json.Unmarshal(buf.Bytes(), out); err != nil {
		fail("%s %s: %v in %s", method, path, err, buf.String())
	}
}

func encode(vector []float32) string {
	raw := make([]byte, 4*len(vector))
	for i, x := range vector {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	return base64.StdEncoding.EncodeToString(raw)
}

func decode(text string) []float32 {
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		fail("vector_b64 %q: %v", text, err)
	}
	vector := make([]float32, len(raw)/4)
	for i := range vector {
		vector[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return vector
}

type record struct {
	ID        string            `json:"id"`
	Vector    []float32         `json:"vector,omitempty"`
	VectorB64 string            `json:"vector_b64,omitempty"`
	Metadata  map[string]string `json:"metadata"`
}

type hit struct {
	ID       string            `json:"id"`
	Distance float64           `json:"distance"`
	Metadata map[string]string `json:"metadata"`
}

func main() {
	base, collection = os.Args[1], os.Args[2]
	prefix := "/collections/" + url.PathEscape(collection)

	var specs struct {
		Collections map[string]struct {
			Dim    int    `json:"dim"`
			IDType string `json:"id_type"`
		} `json:"collections"`
	}
	call("GET", "/collections", nil, &specs)
	spec := specs.Collections[collection]
	if spec.IDType != "int" || spec.Dim == 0 {
		fail("collection %q: %+v", collection, spec)
	}

	// 40 records, ids 1000..1039, vectors from a fixed formula (the test recomputes nothing
	// from it: it reads them back from what this program prints).
	langs := []string{"go", "sql"}
	written := make([]record, 40)
	for i := range written {
		vector := make([]float32, spec.Dim)
		for d := range vector {
			vector[d] = float32(math.Sin(float64(7*i+3*d+1))) * 0.75
		}
		written[i] = record{ID: strconv.Itoa(1000 + i), Vector: vector, Metadata: map[string]string{"lang": langs[i%2]}}
	}
	for start := 0; start < len(written); start += 20 {
		batch := make([]record, 0, 20)
		for _, r := range written[start : start+20] {
			batch = append(batch, record{ID: r.ID, VectorB64: encode(r.Vector), Metadata: r.Metadata})
		}
		var upserted struct{ Upserted int }
		call("POST", prefix+"/records", map[string]any{"records": batch}, &upserted)
		if upserted.Upserted != 20 {
			fail("upserted %d of 20", upserted.Upserted)
		}
	}

	probe := written[7] // lang "sql"
	filter := map[string]any{"lang": "sql"}
	var search struct{ Hits []hit }
	call("POST", prefix+"/search", map[string]any{"vector_b64": encode(probe.Vector), "k": 5, "filter": filter}, &search)
	if len(search.Hits) != 5 || search.Hits[0].ID != probe.ID || search.Hits[0].Distance != 0 ||
		search.Hits[0].Metadata["lang"] != "sql" {
		fail("search for %s: %+v", probe.ID, search.Hits)
	}
	for _, h := range search.Hits {
		if h.Metadata["lang"] != "sql" {
			fail("filter lang=sql answered %+v", h)
		}
	}

	deleted := []string{"1000", "1001", "1002", "1003", "1004", "3"}
	var answer struct{ Deleted int }
	call("POST", prefix+"/delete", map[string]any{"ids": deleted}, &answer)
	if answer.Deleted != len(deleted) {
		fail("deleted %d of %d", answer.Deleted, len(deleted))
	}
	call("DELETE", prefix+"/records/1005", nil, &answer)
	deleted = append(deleted, "1005")

	// Export until next_cursor is null, small pages so the cursor is used.
	var exported []record
	seen := map[string]bool{}
	cursor := ""
	pages := 0
	for {
		query := url.Values{"limit": {"7"}, "vector_format": {"b64"}}
		if cursor != "" {
			query.Set("cursor", cursor)
		}
		var page struct {
			Records    []record `json:"records"`
			NextCursor *string  `json:"next_cursor"`
		}
		call("GET", prefix+"/records?"+query.Encode(), nil, &page)
		pages++
		for _, r := range page.Records {
			if seen[r.ID] {
				fail("export returned %s twice", r.ID)
			}
			seen[r.ID] = true
			exported = append(exported, r)
		}
		if page.NextCursor == nil {
			break
		}
		cursor = *page.NextCursor
	}
	// Its own records come back bit for bit, as little-endian float32.
	byID := map[string]record{}
	for _, r := range exported {
		byID[r.ID] = r
	}
	for _, r := range written[6:] {
		got, ok := byID[r.ID]
		if !ok {
			fail("export is missing %s", r.ID)
		}
		vector := decode(got.VectorB64)
		for d := range vector {
			if math.Float32bits(vector[d]) != math.Float32bits(r.Vector[d]) {
				fail("%s: exported %v, wrote %v", r.ID, vector, r.Vector)
			}
		}
	}
	for _, id := range deleted {
		if seen[id] {
			fail("export returned deleted %s", id)
		}
	}

	var count struct{ Count int }
	call("GET", prefix+"/count", nil, &count)
	if count.Count != len(exported) {
		fail("count %d, export %d", count.Count, len(exported))
	}

	// JSON numbers: each float32 as the shortest decimal that parses back to it.
	for i := range written {
		written[i].VectorB64 = ""
	}
	ids := make([]string, len(exported))
	for i, r := range exported {
		ids[i] = r.ID
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"written":  written,
		"search":   map[string]any{"vector": probe.Vector, "k": 5, "filter": filter, "hits": search.Hits},
		"deleted":  deleted,
		"exported": ids,
		"pages":    pages,
		"count":    count.Count,
	})
}
