package audit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/greatjail/cvm/kbs/audit"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

func Example() {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	log := audit.New(storetest.NewMemory(), func() time.Time { return now })

	claims := []byte(`{"tee":"snp","debug":false}`)
	for _, r := range []audit.Record{
		{Kind: audit.KindAdmin, Actor: "CN=ops", Action: "resource.put tenant/disk-key/1", Outcome: audit.OutcomeOK},
		{Kind: audit.KindAttest, Actor: "guest", Action: "attest", Outcome: audit.OutcomeOK,
			TEE: "snp", PolicyVersion: "7", ClaimsDigest: audit.ClaimsDigest(claims)},
		{Kind: audit.KindRelease, Actor: "guest", Action: "resource.get tenant/disk-key/1", Outcome: audit.OutcomeOK,
			TEE: "snp", PolicyVersion: "7", ClaimsDigest: audit.ClaimsDigest(claims)},
	} {
		if _, err := log.Append(ctx, r); err != nil {
			fmt.Println(err)
			return
		}
	}

	recs, err := log.Tail(ctx, 2)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range recs {
		fmt.Printf("%d %s %s %s prev=%.12s hash=%.12s\n", r.Seq, r.Kind, r.Action, r.Outcome, r.Prev, r.Hash)
	}

	res, err := log.Verify(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("verified %d records, head %.12s\n", res.Records, res.Head)
	// Output:
	// 2 attest attest ok prev=341fb8582e5e hash=bdf8c32e1f36
	// 3 release resource.get tenant/disk-key/1 ok prev=bdf8c32e1f36 hash=f343a50eedfc
	// verified 3 records, head f343a50eedfc
}
