// Package passkeytest is a software passkey authenticator for tests: it
// answers the options of navigator.credentials.create() and get() as a
// browser with a platform authenticator would, with a P-256 key it keeps
// in memory, "none" attestation and a signature counter.
package passkeytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
)

// Authenticator holds one passkey, made by Create.
type Authenticator struct {
	// Origin is the page the browser claims to be on; a phishing site's
	// would differ from the relying party's.
	Origin string
	// Count is the signature counter: the next answer carries Count+1.
	// Setting it back makes the answer of a copied key.
	Count uint32
	// ID is the credential ID, and UserHandle the account's handle, once
	// created.
	ID, UserHandle []byte

	rpID string
	key  *ecdsa.PrivateKey
}

// New returns an authenticator in a browser at origin.
func New(origin string) *Authenticator { return &Authenticator{Origin: origin} }

var b64 = base64.RawURLEncoding

// options is what the tests need of both kinds of options.
type options struct {
	PublicKey struct {
		Challenge string `json:"challenge"`
		RPID      string `json:"rpId"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	} `json:"publicKey"`
}

// Flags of authenticator data.
const (
	flagUP = 0x01
	flagUV = 0x04
	flagAT = 0x40
)

// Create makes a new key pair for the options of
// navigator.credentials.create() (JSON) and returns the
// PublicKeyCredential a browser would send (JSON).
func (a *Authenticator) Create(opts []byte) ([]byte, error) {
	var o options
	if err := json.Unmarshal(opts, &o); err != nil {
		return nil, fmt.Errorf("passkeytest: creation options: %w", err)
	}
	if o.PublicKey.Challenge == "" || o.PublicKey.RP.ID == "" {
		return nil, errors.New("passkeytest: creation options without a challenge or an rp.id")
	}
	user, err := b64.DecodeString(o.PublicKey.User.ID)
	if err != nil {
		return nil, fmt.Errorf("passkeytest: user.id: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		return nil, err
	}
	raw := pub.Bytes() // 0x04 || X || Y
	cose, err := webauthncbor.Marshal(map[int64]any{1: int64(2), 3: int64(-7), -1: int64(1), -2: raw[1:33], -3: raw[33:65]})
	if err != nil {
		return nil, err
	}
	attested := make([]byte, 16) // AAGUID: none
	attested = binary.BigEndian.AppendUint16(attested, uint16(len(id)))
	attested = append(attested, id...)
	attested = append(attested, cose...)
	a.rpID, a.key, a.ID, a.UserHandle = o.PublicKey.RP.ID, key, id, user
	authData := a.authData(flagUP|flagUV|flagAT, attested)
	attObj, err := webauthncbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData})
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"id": b64.EncodeToString(id), "rawId": b64.EncodeToString(id), "type": "public-key",
		"response": map[string]any{
			"attestationObject": b64.EncodeToString(attObj),
			"clientDataJSON":    b64.EncodeToString(a.clientData("webauthn.create", o.PublicKey.Challenge)),
			"transports":        []string{"internal"},
		},
	})
}

// Get signs the challenge of the options of navigator.credentials.get()
// (JSON) and returns the PublicKeyCredential a browser would send (JSON).
func (a *Authenticator) Get(opts []byte) ([]byte, error) {
	if a.key == nil {
		return nil, errors.New("passkeytest: no passkey: Create one first")
	}
	var o options
	if err := json.Unmarshal(opts, &o); err != nil {
		return nil, fmt.Errorf("passkeytest: request options: %w", err)
	}
	if o.PublicKey.Challenge == "" {
		return nil, errors.New("passkeytest: request options without a challenge")
	}
	a.Count++
	authData := a.authData(flagUP|flagUV, nil)
	client := a.clientData("webauthn.get", o.PublicKey.Challenge)
	sum := sha256.Sum256(client)
	digest := sha256.Sum256(append(authData[:len(authData):len(authData)], sum[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, a.key, digest[:])
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"id": b64.EncodeToString(a.ID), "rawId": b64.EncodeToString(a.ID), "type": "public-key",
		"response": map[string]any{
			"authenticatorData": b64.EncodeToString(authData),
			"clientDataJSON":    b64.EncodeToString(client),
			"signature":         b64.EncodeToString(sig),
			"userHandle":        b64.EncodeToString(a.UserHandle),
		},
	})
}

func (a *Authenticator) authData(flags byte, attested []byte) []byte {
	h := sha256.Sum256([]byte(a.rpID))
	out := append(h[:], flags)
	out = binary.BigEndian.AppendUint32(out, a.Count)
	return append(out, attested...)
}

func (a *Authenticator) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": a.Origin, "crossOrigin": false})
	return b
}
