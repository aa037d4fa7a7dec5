//! Login and logout.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response as HttpResponse;
use axum::Extension;

use super::*;

// ----------------------------------------------------------------------------------
// Login
// ----------------------------------------------------------------------------------

pub(super) fn login_page(msg: Option<&str>, user: &str) -> Markup {
    bare(
        "Log in",
        html! {
            @if let Some(m) = msg {
                p class="err" role="alert" { (m) }
            }
            form method="post" action="/login" class="stack" {
                label for="username" { "User name" }
                input id="username" name="username" autocomplete="username" required autofocus value=(user);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" id="login" { "Log in" }
            }
        },
    )
}

pub(super) async fn login_form(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    if caller(&shared, &sessions, &headers, peer).is_ok() {
        return redirect("/");
    }
    html(StatusCode::OK, login_page(None, ""))
}

pub(super) async fn login(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> HttpResponse {
    if !session::same_origin(&headers) {
        return refused_csrf();
    }
    let form = session::parse_form(&body);
    let user = field(&form, "username").unwrap_or("").trim().to_string();
    let password = form
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    match session::login(&shared, &user, &password, peer).await {
        Ok(id) => {
            let (sid, _) = sessions.create(&id.user);
            let mut r = redirect("/");
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&sid)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(refused) => match refused.throttled {
            Some(t) => {
                let mut r = html(
                    StatusCode::TOO_MANY_REQUESTS,
                    login_page(Some(&format!("{t}.")), &user),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(t.wait_secs));
                r
            }
            None => html(
                StatusCode::UNAUTHORIZED,
                login_page(Some("Wrong user name or password."), &user),
            ),
        },
    }
}

pub(super) async fn logout(Extension(sessions): Ses, Post { c, .. }: Post) -> HttpResponse {
    sessions.remove(&c.sid);
    let mut r = redirect("/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_page_escapes_the_user_name_and_the_message() {
        let p = login_page(Some("<script>alert(1)</script>"), "x\"><script>'").into_string();
        assert!(!p.contains("<script"), "{p}");
        assert!(
            p.contains("value=\"x&quot;&gt;&lt;script&gt;'\""),
            "the value stays inside its attribute: {p}"
        );
        assert!(p.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{p}");
        assert!(
            p.contains("<button type=\"submit\" id=\"login\">Log in</button>"),
            "{p}"
        );
    }
}
