//! `easel models`.

use easel_proto::models::v1::ListModelsRequest;

use crate::client::Clients;
use crate::output;

/// Runs `easel models`: every page of the model list.
pub async fn run(clients: &mut Clients, json: bool) -> anyhow::Result<()> {
    let mut page_token = String::new();
    let mut models = Vec::new();
    loop {
        let page = clients
            .models
            .list_models(ListModelsRequest {
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        models.extend(page.models);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if json {
        return output::print_json(&models);
    }
    for model in &models {
        let default = if model.is_default { "  (default)" } else { "" };
        output::line(format!(
            "{}  {} backend(s){default}",
            model.name, model.backend_count
        ));
    }
    Ok(())
}
