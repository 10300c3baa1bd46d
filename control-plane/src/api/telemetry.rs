//! `Telemetry.Report`: each proxy's reports for the dashboard, filed under the identity
//! its SVID proves (what a report says of itself is never taken for who sent it).

use std::time::SystemTime;

use tonic::{Request, Response, Status, Streaming};
use ward_api::v1::{self, ProxyReport, ReportAck};

use super::{Api, caller_svid};

/// Reports larger than this are refused (a proxy's are a few kilobytes).
pub const MAX_REPORT_BYTES: usize = 1 << 20;

#[tonic::async_trait]
impl v1::telemetry_server::Telemetry for Api {
    async fn report(
        &self,
        req: Request<Streaming<ProxyReport>>,
    ) -> Result<Response<ReportAck>, Status> {
        let id = caller_svid(&req)?.to_string();
        let mut reports = req.into_inner();
        while let Some(report) = reports.message().await? {
            self.0.dashboard.report(&id, report, SystemTime::now());
        }
        Ok(Response::new(ReportAck {}))
    }
}
