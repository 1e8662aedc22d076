package flyteimport

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	flytecache "github.com/cacheservice/cacheservice/gen/flyteidl2/cacheservice"
	flytecore "github.com/cacheservice/cacheservice/gen/flyteidl2/core"
)

// BenchmarkConvert measures the importer's own work per row (decoding the
// metadata, placing the row, checking our limits) on rows as Flyte's
// executor writes them, without a database.
func BenchmarkConvert(b *testing.B) {
	conv, err := newConverter(Config{})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	rows := make([]flyteRow, 1000)
	for i := range rows {
		md, err := proto.Marshal(&flytecache.Metadata{
			SourceIdentifier: &flytecore.Identifier{ResourceType: flytecore.ResourceType_TASK,
				Org: "acme", Project: "flytesnacks", Domain: "development", Name: "wf.train", Version: "v7"},
			KeyMap: &flytecache.KeyMapMetadata{Values: map[string]string{
				"task-version": "v7", "exec-project": "flytesnacks", "exec-domain": "development",
				"execution-name": fmt.Sprintf("a%d", i), "exec-node": "n0", "exec-attempt": "0", "exec-org": "acme"}},
			CreatedAt: timestamppb.New(now),
		})
		if err != nil {
			b.Fatal(err)
		}
		rows[i] = flyteRow{Key: fmt.Sprintf("flytesnacks-development-Zm9v%06d-abcd1234-efgh5678-HaSh-v1", i),
			OutputURI: fmt.Sprintf("s3://flyte/outputs/%d/outputs.pb", i), Metadata: md, LastUpdated: now, CreatedAt: now}
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, _, s := conv.convert(rows[i%len(rows)]); s != nil {
			b.Fatal(s)
		}
	}
}
