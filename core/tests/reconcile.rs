//! The reconciler against GitLab answers that are not what its documentation says: the run
//! stops, says why, waits before asking again, and records nothing from the bad answer.

mod common;

use std::cell::RefCell;

use common::{fixture, fresh_db, signer, temp_dir};
use pipetrail_core::ingest::Settings;
use pipetrail_core::reconcile::{self, ApiResponse, Config, Fetch};
use pipetrail_core::sql::{Sql, block_on};

/// Answers in order, and remembers what was asked.
struct Canned {
    answers: RefCell<Vec<(u16, String)>>,
    asked: RefCell<Vec<String>>,
}

impl Fetch for Canned {
    async fn get(&self, url: &str) -> Result<ApiResponse, String> {
        self.asked.borrow_mut().push(url.to_string());
        let (status, body) = self.answers.borrow_mut().remove(0);
        Ok(ApiResponse {
            status,
            headers: Vec::new(),
            body: body.into_bytes(),
        })
    }
}

fn events(db: &impl Sql) -> i64 {
    block_on(db.query("SELECT COUNT(*) FROM events", &[])).unwrap()[0][0]
        .as_i64()
        .unwrap()
}

#[test]
fn a_malformed_answer_stops_the_run_and_records_nothing() {
    let db = fresh_db(&temp_dir("reconcile-malformed"));
    let pipeline = fixture("pipelines_api_get_single_docs.json");
    let list = serde_json::json!([{"id": 287, "updated_at": pipeline["updated_at"]}]).to_string();
    let cfg = Config {
        api_url: "http://127.0.0.1:3000".into(),
        projects: vec![21],
        max_requests: 10,
        since: None,
    };
    let signer = signer();
    let settings = Settings::without_variables(&signer, 0);
    let now = "2026-01-01T00:00:00.000Z";
    for (bad, says) in [
        ("<html>maintenance</html>", "is not JSON"),
        (r#"{"jobs": "none"}"#, "is not a JSON array"),
    ] {
        // The list, then the pipeline, then its jobs: the first bad answer ends the run.
        let answers = if says == "is not JSON" {
            vec![(200, list.clone()), (200, bad.to_string())]
        } else {
            vec![(200, list.clone()), (200, pipeline.to_string()), (200, bad.to_string())]
        };
        let api = Canned {
            answers: RefCell::new(answers),
            asked: RefCell::default(),
        };
        block_on(db.exec("DELETE FROM settings WHERE key LIKE 'reconcile:%'", &[])).unwrap();
        let report = block_on(reconcile::run(&db, &api, &cfg, now, &settings)).unwrap();
        let error = report.error.clone().unwrap_or_default();
        assert!(error.contains(says), "{error}");
        assert!(!error.contains('?'), "URLs are reported without their query: {error}");
        assert!(report.waiting_until.is_some(), "it waits before asking GitLab again");
        assert_eq!(events(&db), 0, "nothing recorded from a bad answer");
        assert!(
            api.answers.borrow().is_empty(),
            "it asked nothing more after the bad answer"
        );
        // The next run waits instead of asking.
        let again = Canned {
            answers: RefCell::default(),
            asked: RefCell::default(),
        };
        let waiting = block_on(reconcile::run(&db, &again, &cfg, now, &settings)).unwrap();
        assert!(again.asked.borrow().is_empty() && waiting.waiting_until.is_some());
    }
}
