package query

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// RunSeq's rows are the first limit rows of Run's; a query without
// aggregates reads the documents only until it has them, an aggregate
// reads them all; TOP applies either way.
func TestRunSeqLimit(t *testing.T) {
	docs := fleet(t)
	for _, sql := range []string{
		"SELECT * FROM devices",
		"SELECT * FROM devices WHERE tags.location.region = 'US'",
		"SELECT deviceId, properties.reported.connectivity.type AS c FROM devices WHERE tags.location.region = 'US'",
		"SELECT TOP 2 * FROM devices WHERE tags.location.region = 'US'",
		"SELECT TOP 0 * FROM devices",
		"SELECT * FROM devices WHERE tags.location.region = 'nowhere'",
		"SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS n FROM devices GROUP BY properties.reported.telemetryConfig.status",
		"SELECT TOP 2 properties.reported.telemetryConfig.status AS status, COUNT() AS n FROM devices GROUP BY properties.reported.telemetryConfig.status",
		"SELECT COUNT() AS n FROM devices WHERE tags.location.region = 'US'",
	} {
		q, err := Parse(sql)
		require.NoError(t, err, sql)
		all, err := q.Run(docs)
		require.NoError(t, err, sql)
		for limit := -1; limit <= len(docs)+1; limit++ {
			read := 0
			seq := func(yield func(map[string]any) bool) {
				for _, d := range docs {
					read++
					if !yield(d) {
						return
					}
				}
			}
			got, err := q.RunSeq(seq, limit)
			require.NoError(t, err, sql)
			want := all
			if !q.aggregate() && limit >= 0 && limit < len(all) {
				want = all[:limit]
			}
			assert.Equal(t, want, got, "%s, limit %d", sql, limit)
			assert.NotNil(t, got, "%s, limit %d: rows are never nil", sql, limit)
			if q.aggregate() {
				assert.Equal(t, len(docs), read, "%s: an aggregate reads every document", sql)
			} else if limit >= 0 && limit < len(all) {
				assert.Less(t, read, len(docs)+1, "%s, limit %d", sql, limit)
				last := slices.IndexFunc(docs, func(d map[string]any) bool { return q.star && len(got) > 0 && sameDoc(d, got[len(got)-1]) })
				if last >= 0 {
					assert.Equal(t, last+1, read, "%s, limit %d: stops at the last row's document", sql, limit)
				}
			}
		}
	}
}

func sameDoc(d map[string]any, row any) bool {
	r, ok := row.(map[string]any)
	return ok && r["deviceId"] == d["deviceId"]
}
