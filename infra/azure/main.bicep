// quell on Azure: a Linux Function App on Flex Consumption running the custom handler
// (functions/azure-handler), a user-assigned managed identity, Event Hubs for Defender XDR
// streaming and Entra diagnostic logs, storage, Application Insights, and the alerting an
// on-call engineer expects: an action group, log alert rules and a workbook.
// Deploys in dry-run mode. Graph permissions and the ARM role are granted after deployment:
// see infra/README.md.

@description('Region for every resource.')
param location string = resourceGroup().location

@description('Short name used to derive resource names (3-11 lowercase letters or digits).')
@minLength(3)
@maxLength(11)
param baseName string = 'quell'

@description('dry-run plans and reports only; enforce executes.')
@allowed([
  'dry-run'
  'enforce'
])
param mode string = 'dry-run'

@description('Comma-separated patterns (ARNs, UPNs, object ids; * wildcard) quell never touches.')
param protectedPrincipals string = ''

@description('Subscriptions searched for a compromised managed identity\'s role assignments (comma-separated ids).')
param roleAssignmentSubscriptions string = subscription().subscriptionId

@description('Maximum Flex Consumption instances.')
@minValue(1)
@maxValue(100)
param maximumInstanceCount int = 10

@description('Optional e-mail address the action group alerts when quell needs a human or fails.')
param alertEmail string = ''

var suffix = uniqueString(resourceGroup().id, baseName)
var storageName = toLower('${baseName}${suffix}')
var deploymentContainer = 'deployments'
var defenderHub = 'defender-xdr'
var entraHub = 'entra-risk'

// Built-in role definition ids.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  eventHubsDataReceiver: 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${baseName}-id-${suffix}'
  location: location
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${baseName}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${baseName}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches its host storage over the public endpoint; shared keys are disabled, so only the app's identity can use it.
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; blob public access is off and shared keys are disabled.
  // checkov:skip=CKV_AZURE_43: the name is computed (baseName + uniqueString, lower-cased, at most 24 characters), which checkov cannot evaluate.
  name: take(storageName, 24)
  location: location
  sku: {
    name: 'Standard_GRS'
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // The Functions host reaches its storage over the public endpoint on Flex Consumption
      // without VNet integration; access is identity-only (shared keys disabled).
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deployments 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainer
  properties: {
    publicAccess: 'None'
  }
}

// quell's containment ledger: what was contained, why, and how to undo it (quell release), the
// idempotency key across redeliveries and the fleet breaker's counters. Reached with the
// identity's token (Storage Table Data Contributor below); shared keys stay disabled.
resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: 'quellledger'
}

// The checks after containment: the handler puts one message per contained principal, invisible
// for the policy's [verify] after_seconds; the Verify function (queue trigger) checks the
// containment still holds once Entra has propagated. Failed checks are retried and, past
// host.json maxDequeueCount, land in quell-verify-poison. Storage Queue Data Contributor below.
resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource verifyQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'quell-verify'
}

resource eventHubs 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: '${baseName}-eh-${suffix}'
  location: location
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: 1
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
  }
}

resource defenderEvents 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: eventHubs
  name: defenderHub
  properties: {
    partitionCount: 2
    messageRetentionInDays: 3
  }
}

resource entraEvents 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: eventHubs
  name: entraHub
  properties: {
    partitionCount: 2
    messageRetentionInDays: 3
  }
}

resource defenderGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: defenderEvents
  name: 'quell'
}

resource entraGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: entraEvents
  name: 'quell'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy is an availability choice with region limits on Flex Consumption; missed events stay in Event Hubs and are processed on restart.
  name: '${baseName}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the GraphAlert and Runbook HTTP functions are called by Sentinel playbooks over the internet; each call needs a function key.
  // checkov:skip=CKV_AZURE_17: HTTP callers authenticate with function keys (authLevel function); client certificates do not fit Logic Apps callers.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; Event Hub triggers resume from their checkpoint, so no always-ready instance is needed.
  // checkov:skip=CKV_AZURE_213: health-check pings are an App Service plan feature; on Flex Consumption the host checks the custom handler itself (GET / readiness).
  name: '${baseName}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 512
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        { name: 'EventHubConnection__fullyQualifiedNamespace', value: '${eventHubs.name}.servicebus.windows.net' }
        { name: 'EventHubConnection__credential', value: 'managedidentity' }
        { name: 'EventHubConnection__clientId', value: identity.properties.clientId }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
        { name: 'QUELL_DEFENDER_EVENTHUB', value: defenderHub }
        { name: 'QUELL_ENTRA_EVENTHUB', value: entraHub }
        { name: 'QUELL_MODE', value: mode }
        { name: 'QUELL_PROTECTED', value: protectedPrincipals }
        { name: 'QUELL_AZURE_CREDENTIAL', value: 'managed_identity' }
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        // Identity Protection is metered per tenant: quell paces its calls per tenant.
        { name: 'AZURE_TENANT_ID', value: tenant().tenantId }
        // Sovereign clouds: set QUELL_GRAPH_URL / QUELL_ARM_URL (token scopes follow them).
        { name: 'QUELL_OWN_OBJECT_ID', value: identity.properties.principalId }
        { name: 'QUELL_AZURE_SUBSCRIPTIONS', value: roleAssignmentSubscriptions }
        { name: 'QUELL_LEDGER_ENDPOINT', value: storage.properties.primaryEndpoints.table }
        { name: 'QUELL_LEDGER_TABLE', value: ledgerTable.name }
        { name: 'QUELL_VERIFY_QUEUE', value: '${storage.properties.primaryEndpoints.queue}${verifyQueue.name}' }
      ]
    }
  }
}

// The identity reads and writes the host's storage, receives from the hubs, publishes telemetry.
resource storageBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, identity.id, roles.storageBlobDataOwner)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

resource storageQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
  }
}

resource storageTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

resource hubsReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: eventHubs
  name: guid(eventHubs.id, identity.id, roles.eventHubsDataReceiver)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataReceiver)
  }
}

resource telemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: insights
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// ------------------------------------------------------------------------------------------
// Alerting: who hears what quell does. The handler writes a `quell.outcome {json}` record per
// invocation and a `quell.alert {json}` record (the plain-text alert) when a human is needed
// (a notify, a failed action, a withheld containment) or an event was rejected; Application
// Insights keeps them in `traces`. The rules below page the action group.

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${baseName}-alerts-${suffix}'
  location: 'global'
  properties: {
    groupShortName: 'quell'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'on-call'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Each rule notifies once per record: it is stateless (autoMitigate off, so a second alert in
// the same hour is not merged into the first, still-open one) and splits by the invocation
// (operation_Id), the function and the principals, so every quell.alert record is an alert of
// its own that names who and where. Records are picked by when they were ingested: each
// evaluation takes those ingested in the last 5 minutes (its frequency), inside a 30-minute
// window that covers Application Insights' ingestion latency, so a late record is neither
// missed nor sent twice ("Log search alert rules: split by dimensions", "stateless alerts").
var alertRules = [
  {
    name: 'needs-a-human'
    severity: 2
    description: 'quell needs a human: a notify, a withheld containment or sweep, or a rejected event. The alert text is in the quell.alert record.'
    query: 'traces | where message startswith "quell.alert " | where ingestion_time() > ago(5m) | extend a = parse_json(substring(message, 12)) | where toint(a.needs.failed) == 0 | project timestamp, operation_Id, function = tostring(a.function), principals = strcat_array(a.principals, ", "), subject = tostring(a.subject), text = tostring(a.text)'
    dimensions: [ 'operation_Id', 'function', 'principals' ]
  }
  {
    name: 'failed-actions'
    severity: 1
    description: 'quell could not carry out a containment action; the quell.alert record says which and why.'
    query: 'traces | where message startswith "quell.alert " | where ingestion_time() > ago(5m) | extend a = parse_json(substring(message, 12)) | where toint(a.needs.failed) > 0 | project timestamp, operation_Id, function = tostring(a.function), principals = strcat_array(a.principals, ", "), failed = toint(a.needs.failed), text = tostring(a.text)'
    dimensions: [ 'operation_Id', 'function', 'principals' ]
  }
  {
    name: 'function-failures'
    severity: 1
    description: 'A quell function invocation failed (Event Hub invocations are retried by the function retry policy).'
    query: 'requests | where success == false | where ingestion_time() > ago(5m) | project timestamp, operation_Id, operation_Name, resultCode'
    dimensions: [ 'operation_Id', 'operation_Name' ]
  }
]

resource rules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for r in alertRules: {
  name: '${baseName}-${r.name}-${suffix}'
  location: location
  properties: {
    displayName: 'quell: ${r.name}'
    description: r.description
    severity: r.severity
    enabled: true
    scopes: [
      insights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT30M'
    autoMitigate: false
    criteria: {
      allOf: [
        {
          query: r.query
          timeAggregation: 'Count'
          dimensions: [for d in r.dimensions: {
            name: d
            operator: 'Include'
            values: [
              '*'
            ]
          }]
          operator: 'GreaterThanOrEqual'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

resource workbook 'Microsoft.Insights/workbooks@2022-04-01' = {
  name: guid(resourceGroup().id, baseName, 'quell-workbook')
  location: location
  kind: 'shared'
  properties: {
    displayName: 'quell: containment and alerts'
    category: 'workbook'
    sourceId: insights.id
    serializedData: string(loadJsonContent('workbook.json'))
  }
}

output functionAppName string = app.name
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output eventHubNamespace string = eventHubs.name
output ledgerTableEndpoint string = storage.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
output actionGroupId string = actionGroup.id
output workbookId string = workbook.id
