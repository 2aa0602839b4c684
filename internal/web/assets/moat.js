// moat's dashboard works without this script. It counts down to a
// firewall rollback, and drives passkeys (which need script: WebAuthn is
// a browser API).
"use strict";
(function () {
  document.documentElement.classList.add("js");

  var clocks = document.querySelectorAll("[data-deadline]");
  function tick() {
    var now = Date.now();
    clocks.forEach(function (el) {
      var left = Math.max(0, Math.round((Number(el.dataset.deadline) - now) / 1000));
      el.textContent = left > 0 ? "(rolls back in " + left + " s)" : "(rolled back: reload the page)";
    });
  }
  if (clocks.length) {
    tick();
    setInterval(tick, 1000);
  }

  if (!window.PublicKeyCredential) return;

  // WebAuthn speaks bytes; moat's API speaks JSON with base64url.
  function bytes(s) {
    var b = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
    var out = new Uint8Array(b.length);
    for (var i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
    return out.buffer;
  }
  function b64(buf) {
    var s = "";
    new Uint8Array(buf).forEach(function (c) { s += String.fromCharCode(c); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function ids(list) {
    (list || []).forEach(function (c) { c.id = bytes(c.id); });
  }
  function answer(cred) {
    var r = cred.response, out = {
      id: cred.id, rawId: b64(cred.rawId), type: cred.type,
      authenticatorAttachment: cred.authenticatorAttachment,
      clientExtensionResults: cred.getClientExtensionResults(),
      response: { clientDataJSON: b64(r.clientDataJSON) }
    };
    if (r.attestationObject) {
      out.response.attestationObject = b64(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = b64(r.authenticatorData);
      out.response.signature = b64(r.signature);
      if (r.userHandle) out.response.userHandle = b64(r.userHandle);
    }
    return out;
  }
  function post(path, body) {
    var csrf = document.querySelector("input[name=csrf]");
    var headers = { "Content-Type": "application/json" };
    if (csrf) headers["X-CSRF-Token"] = csrf.value;
    return fetch(path, { method: "POST", headers: headers, body: body === undefined ? "{}" : JSON.stringify(body), credentials: "same-origin" })
      .then(function (res) {
        return res.json().then(function (j) {
          if (!res.ok) throw new Error(j.error && j.error.message || res.statusText);
          return j;
        });
      });
  }
  function say(text) {
    var el = document.getElementById("error");
    if (!el) {
      el = document.createElement("p");
      el.id = "error";
      el.className = "error";
      el.setAttribute("role", "alert");
      document.querySelector("h1").after(el);
    }
    el.textContent = text;
  }
  function get(begin, finish) {
    return post(begin).then(function (o) {
      o.publicKey.challenge = bytes(o.publicKey.challenge);
      ids(o.publicKey.allowCredentials);
      return navigator.credentials.get(o);
    }).then(function (cred) { return finish(answer(cred)); });
  }
  function on(id, fn) {
    var el = document.getElementById(id);
    if (!el) return;
    el.hidden = false;
    el.addEventListener(el.tagName === "FORM" ? "submit" : "click", function (ev) {
      ev.preventDefault();
      fn(el).catch(function (err) { say("The passkey did not work: " + err.message); });
    });
  }

  // Where a sign-in goes on to: the page's next field, checked by moat.
  function onward() {
    var next = document.querySelector("input[name=next]");
    location.href = next && next.value || "/";
  }
  on("passkey-signin", function () {
    return get("/v1/auth/passkey", function (a) { return post("/v1/auth/passkey/finish", a); }).then(onward);
  });
  on("passkey-second", function () {
    return get("/v1/auth/second/passkey", function (a) { return post("/v1/auth/second", { factor: "passkey", credential: a }); }).then(onward);
  });
  on("add-passkey", function (form) {
    return post("/v1/me/passkeys").then(function (o) {
      o.publicKey.challenge = bytes(o.publicKey.challenge);
      o.publicKey.user.id = bytes(o.publicKey.user.id);
      ids(o.publicKey.excludeCredentials);
      return navigator.credentials.create(o);
    }).then(function (cred) {
      return post("/v1/me/passkeys/finish", { name: form.elements.name.value, credential: answer(cred) });
    }).then(function () { location.href = "/account?done=passkey-added#passkeys"; });
  });
})();
