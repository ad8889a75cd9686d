import {
  Button,
  Divider,
  EmptyState,
  ErrorState,
  Flex,
  Heading,
  List,
  LoadingSpinner,
  ProgressBar,
  Statistics,
  StatisticsItem,
  StatisticsTrend,
  StatusTag,
  Tag,
  Text,
} from '@hubspot/ui-extensions';
import { useCallback, useEffect, useState } from 'react';

import { type CardState, type Fetcher, loadUsage, type Usage } from './usage.ts';

export interface ProductUsageCardProps {
  objectTypeId: string;
  objectId: number | string;
  fetcher: Fetcher;
}

/** Product usage of the company or contact the card is on, from the PQL engine. */
export function ProductUsageCard({ objectTypeId, objectId, fetcher }: ProductUsageCardProps) {
  const [state, setState] = useState<CardState>({ kind: 'loading' });
  const load = useCallback(() => {
    setState({ kind: 'loading' });
    loadUsage(fetcher, objectTypeId, objectId).then(setState);
  }, [fetcher, objectTypeId, objectId]);
  useEffect(load, [load]);

  if (state.kind === 'loading') {
    return <LoadingSpinner label="Loading product usage" testId="loading" />;
  }
  if (state.kind === 'error') {
    return (
      <ErrorState title="The PQL engine could not be reached" testId="error">
        <Text testId="error-message">{state.message}</Text>
        <Button onClick={load} testId="retry">
          Try again
        </Button>
      </ErrorState>
    );
  }
  const answer = state.answer;
  if (answer.status === 'not_synced') {
    return (
      <EmptyState title="Not scored yet" testId="not-synced" layout="vertical">
        <Text>
          The PQL engine has no product usage for this record yet: it appears after the
          product's events for it arrive and the next sync writes them.
        </Text>
        <Button href={answer.adminUrl} testId="open-admin">
          Open the PQL engine
        </Button>
      </EmptyState>
    );
  }
  return <UsageView usage={answer} />;
}

function UsageView({ usage }: { usage: Usage }) {
  const { activation, engagement, pql, features } = usage;
  return (
    <Flex direction="column" gap="md">
      <Heading>Activation</Heading>
      <ProgressBar
        value={activation.rate}
        maxValue={100}
        showPercentage
        title="Activation rate"
        testId="activation"
      />
      <Text testId="next-step">
        {activation.nextStep ? `Next step: ${activation.nextStep}` : 'Every step is done.'}
      </Text>
      <Statistics>
        <StatisticsItem label="Engagement score" number={String(engagement.score)} testId="engagement">
          {engagement.change !== null ? (
            <StatisticsTrend
              direction={engagement.change >= 0 ? 'increase' : 'decrease'}
              value={`${Math.abs(engagement.change)} points`}
            />
          ) : null}
        </StatisticsItem>
      </Statistics>
      <Flex gap="sm">
        <Tag testId="segment">{engagement.segment}</Tag>
        {engagement.trend ? <Tag testId="trend">{engagement.trend}</Tag> : null}
      </Flex>
      {pql ? (
        <>
          <Divider />
          <Heading>Product-qualified lead</Heading>
          <StatusTag variant={pql.isPql ? 'success' : 'default'} testId="pql">
            {pql.isPql ? `PQL${pql.kind ? ` (${pql.kind})` : ''}` : 'Not a PQL'}
          </StatusTag>
          <Text testId="pql-reason">{pql.reason}</Text>
        </>
      ) : null}
      {usage.leadType ? (
        <Text testId="lead-type">
          {`Lead type: ${usage.leadType}, ${usage.chanceToConvert ?? 0}% chance to convert`}
        </Text>
      ) : null}
      <Divider />
      <Heading>Key features</Heading>
      <List testId="features-used">
        {features.used.map((f) => (
          <Text key={f}>{`Used: ${f}`}</Text>
        ))}
      </List>
      <List testId="features-not-used">
        {features.notUsed.map((f) => (
          <Text key={f}>{`Not used yet: ${f}`}</Text>
        ))}
      </List>
      <Button href={usage.adminUrl} testId="open-admin">
        Open the PQL engine
      </Button>
    </Flex>
  );
}
