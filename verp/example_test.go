package verp_test

import (
	"fmt"
	"time"

	"github.com/bouncer/bouncer/verp"
)

// A sender signs the return path of each message; bouncer verifies it when
// the bounce arrives.
func ExampleSigner() {
	key := verp.Key{ID: "k", Secret: "correct horse battery staple"}
	s, err := verp.NewSigner(verp.SignerOptions{Key: key, Domain: "bounce.example.org"})
	if err != nil {
		panic(err)
	}
	sent := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	rp, err := s.Sign("Jane.Doe@Example.COM", "spring26", "news", sent)
	if err != nil {
		panic(err)
	}
	fmt.Println(rp)

	d := verp.NewDecoder(verp.Options{
		Keys: []verp.Key{key},
		Now:  func() time.Time { return sent.Add(48 * time.Hour) },
	})
	res, err := d.Decode("BOUNCES+=AKUBB4IRM3ZFRL2CTB=SPRING26=NEWS=JANE.DOE=EXAMPLE.COM")
	fmt.Println(res.Recipient, res.Campaign, res.List, res.Verified, err)
	// Output:
	// bounces+=akubb4irm3zfrl2ctb=spring26=news=Jane.Doe=example.com@bounce.example.org
	// JANE.DOE@example.com spring26 news true <nil>
}
