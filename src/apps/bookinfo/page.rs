//! productpage's HTML (pure): the product page with its details, reviews and stars, and the
//! index. The texts users and Istio's docs look for are Istio's; the markup is meshrig's own.

use serde_json::Value;

pub const TITLE: &str = "The Comedy of Errors";
pub const DESCRIPTION_HTML: &str = "<a href=\"https://en.wikipedia.org/wiki/The_Comedy_of_Errors\">Wikipedia Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in addition to puns and word play.";

/// What the page shows: each part's status and JSON (the app's error object when it failed).
pub struct View<'a> {
    pub user: &'a str,
    pub details_status: u16,
    pub details: &'a Value,
    pub reviews_status: u16,
    pub reviews: &'a Value,
}

/// HTML-escapes text (what Jinja's autoescape does).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A JSON value as page text: strings without quotes, numbers as written, escaped.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Null => String::new(),
        other => escape(&other.to_string()),
    }
}

const STYLE: &str = "body{margin:0;font-family:system-ui,sans-serif;color:#111827}\
nav{background:#1f2937;color:#fff;padding:1rem 2rem;display:flex;justify-content:space-between;align-items:center}\
nav a{color:#d1d5db}.container{max-width:64rem;margin:0 auto;padding:1.5rem 2rem}\
h1{color:#1e3a8a;font-size:2.5rem}table{border-collapse:collapse}th,td{padding:.4rem .8rem;text-align:left}\
.reviews{background:#eef2ff}.reviews section{display:inline-block;vertical-align:top;width:45%;margin-right:3%}\
.flex{display:flex}.gap-x-1{gap:.25rem}[class$=\"-black-500\"]{color:#111}[class$=\"-red-500\"]{color:#ef4444}\
.error,.rating-error{color:#ef4444}.error{font-size:1.4rem}svg{width:1.25rem;height:1.25rem}";

const STAR: &str = "<polygon points=\"10,1 12.9,7 19.5,7.6 14.5,12 16,18.5 10,15 4,18.5 5.5,12 0.5,7.6 7.1,7\"/>";

/// `n` full stars then empty ones up to five, in `color`.
pub fn stars(n: i64, color: &str) -> String {
    let n = n.clamp(0, 5);
    let mut out = format!("<div class=\"flex gap-x-1 text-{}-500\">\n", escape(color));
    for _ in 0..n {
        out.push_str(&format!(
            "<svg id=\"glyphicon glyphicon-star\" viewBox=\"0 0 20 20\" fill=\"currentColor\" aria-hidden=\"true\">{STAR}</svg>\n"
        ));
    }
    for _ in n..5 {
        out.push_str(&format!(
            "<svg class=\"star-empty\" viewBox=\"0 0 20 20\" fill=\"none\" stroke=\"currentColor\" aria-hidden=\"true\">{STAR}</svg>\n"
        ));
    }
    out.push_str("</div>\n");
    out
}

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    )
}

fn nav(user: &str) -> String {
    let right = if user.is_empty() {
        "<form method=\"post\" action=\"login\" name=\"login_form\">\n\
         <label>Username <input id=\"username\" name=\"username\" required></label>\n\
         <label>Password <input id=\"password\" name=\"passwd\" type=\"password\"></label>\n\
         <button type=\"submit\" id=\"sign-in-button\">Sign in</button>\n</form>"
            .to_string()
    } else {
        format!("<div><p class=\"user\">{}</p>\n<a href=\"logout\">Sign out</a></div>", escape(user))
    };
    format!("<nav>\n<a href=\"#\">BookInfo Sample</a>\n{right}\n</nav>\n")
}

/// The product page.
pub fn product_page(v: &View) -> String {
    let mut out = head("Simple Bookstore App");
    out.push_str(&nav(v.user));
    out.push_str(&format!(
        "<div class=\"container\">\n<h1>{TITLE}</h1>\n<p>{DESCRIPTION_HTML}</p>\n</div>\n<div class=\"container details\">\n"
    ));
    if v.details_status == 200 {
        let d = v.details;
        out.push_str("<h4>Book Details</h4>\n<table>\n<tr><th>ISBN-10</th><th>Publisher</th><th>Pages</th><th>Type</th><th>Language</th></tr>\n");
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n</table>\n",
            text(&d["ISBN-10"]),
            text(&d["publisher"]),
            text(&d["pages"]),
            text(&d["type"]),
            text(&d["language"])
        ));
    } else {
        out.push_str("<p class=\"error\">Error fetching product details</p>\n");
        out.push_str(&format!("<p>{}</p>\n", text(&v.details["error"])));
    }
    out.push_str("</div>\n<div class=\"reviews\"><div class=\"container\">\n");
    if v.reviews_status == 200 {
        out.push_str("<h4>Book Reviews</h4>\n");
        let podname = text(&v.reviews["podname"]);
        let cluster = &v.reviews["clustername"];
        for r in v.reviews["reviews"].as_array().map(Vec::as_slice).unwrap_or_default() {
            out.push_str("<section>\n");
            let rating = &r["rating"];
            if let Some(n) = rating["stars"].as_i64().filter(|n| *n != 0) {
                out.push_str(&stars(n, rating["color"].as_str().unwrap_or("black")));
            } else if rating["error"].is_string() {
                out.push_str(&format!("<p class=\"rating-error\">{}</p>\n", text(&rating["error"])));
            }
            out.push_str(&format!("<blockquote><p>\"{}\"</p></blockquote>\n", text(&r["text"])));
            out.push_str(&format!("<div class=\"reviewer\">{}</div>\n", text(&r["reviewer"])));
            out.push_str(&format!("<div class=\"served-by\">Reviews served by: \n{podname}\n"));
            if !cluster.is_null() && cluster.as_str() != Some("null") {
                out.push_str(&format!("on cluster <div>{}</div>\n", text(cluster)));
            }
            out.push_str("</div>\n</section>\n");
        }
    } else {
        out.push_str("<p class=\"error\">Error fetching product reviews</p>\n");
        out.push_str(&format!("<p>{}</p>\n", text(&v.reviews["error"])));
    }
    out.push_str("</div></div>\n</body>\n</html>\n");
    out
}

/// The index: what the app is made of, and where to go.
pub fn index() -> String {
    let mut out = head("Simple Bookstore App");
    out.push_str(
        "<div class=\"container\">\n<h1>Hello! This is a simple bookstore application consisting of three services as shown below</h1>\n\
         <table>\n<tr><th>name</th><td>http://details:9080</td></tr>\n<tr><th>endpoint</th><td>details</td></tr>\n\
         <tr><th>children</th><td>details (http://details:9080), reviews (http://reviews:9080) → ratings (http://ratings:9080)</td></tr>\n</table>\n\
         <p>Click on one of the links below to auto generate a request to the backend as a real user or a tester</p>\n\
         <p><a href=\"/productpage?u=normal\">Normal user</a></p>\n<p><a href=\"/productpage?u=test\">Test user</a></p>\n</div>\n</body>\n</html>\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stars_errors_and_the_user_appear_as_istios_page_shows_them() {
        let details = json!({"ISBN-10": "1234567890", "publisher": "PublisherA", "pages": 200, "type": "paperback", "language": "English"});
        let reviews = json!({"podname": "reviews-v3-x", "clustername": "null", "reviews": [
            {"reviewer": "Reviewer1", "text": "t1", "rating": {"stars": 5, "color": "red"}},
            {"reviewer": "Reviewer2", "text": "t2", "rating": {"stars": 4, "color": "red"}}]});
        let page = product_page(&View {
            user: "",
            details_status: 200,
            details: &details,
            reviews_status: 200,
            reviews: &reviews,
        });
        assert!(page.contains("<title>Simple Bookstore App</title>"));
        assert_eq!(page.matches("glyphicon-star").count(), 9);
        assert_eq!(page.matches("text-red-500").count(), 2, "the colour class appears only on the stars");
        assert_eq!(page.matches("Reviews served by:").count(), 2);
        assert!(page.contains("reviews-v3-x") && page.contains("Book Details") && page.contains("PublisherA"));
        assert!(page.contains("Sign in") && !page.contains("Sign out"));

        let err = json!({"error": "Sorry, product reviews are currently unavailable for this book."});
        let unavailable = json!({"podname": "p", "clustername": "null", "reviews": [
            {"reviewer": "Reviewer1", "text": "t", "rating": {"error": "Ratings service is currently unavailable"}}]});
        let page = product_page(&View {
            user: "<jason>",
            details_status: 500,
            details: &err,
            reviews_status: 200,
            reviews: &unavailable,
        });
        assert!(
            page.contains("Error fetching product details")
                && page.contains("Ratings service is currently unavailable")
        );
        assert!(page.contains("&lt;jason&gt;") && page.contains("Sign out"), "the user's name is escaped");
        let page = product_page(&View {
            user: "",
            details_status: 200,
            details: &details,
            reviews_status: 503,
            reviews: &err,
        });
        assert!(page.contains("Error fetching product reviews"));
        assert!(page.contains("Sorry, product reviews are currently unavailable for this book."));
        assert!(!page.contains("glyphicon-star"));
    }
}
